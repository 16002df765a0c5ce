"""Enrollment: the wire contract, idempotent agents, short-lived keys, revocation, audit."""

import datetime as dt

import pytest
from support.world import INFO, make_tenant, operator_token

from postern.core import enrollment
from postern.core.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from postern.core.models import Agent, AgentKey, AuditEvent, EnrollmentKey, utcnow

ENROLL_FIELDS = {
    "agent_id",
    "agent_handle",
    "agent_key",
    "agent_key_prefix",
    "scopes",
    "mailboxes_used",
    "mailboxes_max",
    "expires_at",
}


def enroll(client, token, handle="support-bot"):
    return client.simulate_post("/v1/enroll", json={"enrollment_token": token, "agent_handle": handle})


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_enroll_wire_contract_and_me(client):
    acme = make_tenant("acme")
    row, token = acme.enrollment_key(scopes=["mailbox:read", "mailbox:create"], max_mailboxes=5)
    resp = enroll(client, token)
    assert resp.status_code == 201, resp.text
    body = resp.json
    assert ENROLL_FIELDS <= set(body)
    assert body["agent_key"].startswith("pk_agent_") and body["agent_key"].startswith(body["agent_key_prefix"])
    assert body["scopes"] == ["mailbox:create", "mailbox:read"]
    assert (body["mailboxes_used"], body["mailboxes_max"]) == (0, 5)
    me = client.simulate_get("/v1/me", headers=bearer(body["agent_key"])).json
    assert me["agent_id"] == body["agent_id"] and me["customer_id"] == acme.customer.id
    assert me["domains"] == ["acme.agents.localhost"] and me["expires_at"] == body["expires_at"]
    # Only the hash and prefix are stored.
    stored = AgentKey.get(AgentKey.agent == body["agent_id"])
    assert stored.key_prefix == body["agent_key_prefix"] and body["agent_key"] not in stored.key_hash


def test_same_handle_same_agent_fresh_key_each_time(client):
    _, token = make_tenant("acme").enrollment_key()
    first, second = enroll(client, token).json, enroll(client, token).json
    other = enroll(client, token, "other-bot").json
    assert first["agent_id"] == second["agent_id"] != other["agent_id"]
    assert first["agent_key"] != second["agent_key"]
    # Both keys stay valid: a new redemption does not revoke the previous key.
    for key in (first["agent_key"], second["agent_key"]):
        assert client.simulate_get("/v1/me", headers=bearer(key)).status_code == 200
    assert Agent.select().count() == 2


def test_handles_are_normalised_and_validated(client):
    _, token = make_tenant("acme").enrollment_key()
    assert enroll(client, token, "Support-Bot").json["agent_handle"] == "support-bot"
    for bad in ["", "-x", "a" * 65, "bot bot", "bot/1", 42, None]:
        resp = enroll(client, token, bad)
        assert resp.status_code == 422 and resp.json["error"]["field"] == "agent_handle", bad


def test_agent_key_never_outlives_enrollment(db):
    acme = make_tenant("acme")
    _, token = acme.enrollment_key(expires_in=dt.timedelta(minutes=30))
    result = enrollment.redeem(INFO, token, "bot", agent_key_ttl=dt.timedelta(days=1))
    assert result.key.expires_at == result.enrollment.expires_at
    _, token = acme.enrollment_key(expires_in=dt.timedelta(days=7))
    result = enrollment.redeem(INFO, token, "bot", agent_key_ttl=dt.timedelta(hours=2))
    assert abs((result.key.expires_at - utcnow()) - dt.timedelta(hours=2)) < dt.timedelta(seconds=5)


def test_agent_key_carries_exactly_the_enrollment_scopes(db):
    result = make_tenant("acme").agent_key(scopes=["mailbox:read"])
    assert result.key.scopes == "mailbox:read"


def test_expired_revoked_and_exhausted_enrollments(client):
    acme = make_tenant("acme")
    row, token = acme.enrollment_key(max_redemptions=2)
    assert enroll(client, token).status_code == 201
    assert enroll(client, token, "b").status_code == 201
    resp = enroll(client, token, "c")
    assert resp.status_code == 403 and resp.json["error"]["code"] == "redemption_limit_reached"
    assert EnrollmentKey.get_by_id(row.id).redemptions == 2

    row, token = acme.enrollment_key()
    EnrollmentKey.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(EnrollmentKey.id == row.id).execute()
    resp = enroll(client, token)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "key_expired"

    row, token = acme.enrollment_key()
    enrollment.revoke_enrollment_key(acme_principal(acme), INFO, row.id, revoke_agent_keys=False)
    resp = enroll(client, token)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "key_revoked"
    assert AgentKey.select().where(AgentKey.enrollment == row.id).count() == 0


def acme_principal(tenant):
    from postern.core.principal import Principal

    return Principal(kind="admin", customer_id=tenant.customer.id, token_id="adm_test", key_prefix="pk_admin_test")


@pytest.mark.parametrize(
    "token, code",
    [
        ("pk_enroll_nothing", "invalid_key"),
        ("not-a-key", "invalid_key"),
    ],
)
def test_bad_enrollment_tokens(client, token, code):
    resp = enroll(client, token)
    assert resp.status_code == 401 and resp.json["error"]["code"] == code


def test_agent_or_admin_key_as_enrollment_token_is_refused(client):
    acme = make_tenant("acme")
    agent_key = acme.agent_key().agent_key
    for token in (agent_key, acme.admin_token):
        resp = enroll(client, token)
        assert resp.status_code == 403 and resp.json["error"]["code"] == "wrong_key_type"
    assert Agent.select().count() == 1


def test_revoking_enrollment_optionally_cascades(client):
    acme = make_tenant("acme")
    row, token = acme.enrollment_key()
    k1, k2 = enroll(client, token, "a").json["agent_key"], enroll(client, token, "b").json["agent_key"]
    other = acme.agent_key(handle="other").agent_key  # another enrollment key of the same tenant
    resp = client.simulate_post(f"/v1/admin/enrollment-keys/{row.id}/revoke", headers=bearer(acme.admin_token))
    assert resp.status_code == 200 and resp.json["agent_keys_revoked"] == 0 and resp.json["revoked_at"]
    assert client.simulate_get("/v1/me", headers=bearer(k1)).status_code == 200  # minted keys live on
    assert enroll(client, token, "c").json["error"]["code"] == "key_revoked"
    resp = client.simulate_post(
        f"/v1/admin/enrollment-keys/{row.id}/revoke", headers=bearer(acme.admin_token), json={"revoke_agent_keys": True}
    )
    assert resp.json["agent_keys_revoked"] == 2
    for key in (k1, k2):
        assert client.simulate_get("/v1/me", headers=bearer(key)).json["error"]["code"] == "key_revoked"
    assert client.simulate_get("/v1/me", headers=bearer(other)).status_code == 200


def test_revoking_one_agent_key_leaves_others(client):
    acme = make_tenant("acme")
    _, token = acme.enrollment_key()
    a, b = enroll(client, token, "a").json, enroll(client, token, "b").json
    a_key = AgentKey.get(AgentKey.agent == a["agent_id"])
    resp = client.simulate_post(f"/v1/admin/agent-keys/{a_key.id}/revoke", headers=bearer(acme.admin_token))
    assert resp.status_code == 200 and resp.json["revoked_at"]
    assert client.simulate_get("/v1/me", headers=bearer(a["agent_key"])).status_code == 401
    assert client.simulate_get("/v1/me", headers=bearer(b["agent_key"])).status_code == 200


def test_admin_api_mints_enrollment_keys_for_own_tenant_only(client):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    body = {"scopes": ["mailbox:read"], "max_mailboxes": 3, "expires_in": 3600}
    resp = client.simulate_post("/v1/admin/enrollment-keys", headers=bearer(acme.admin_token), json=body)
    assert resp.status_code == 201 and resp.json["customer_id"] == acme.customer.id
    assert resp.json["enrollment_key"].startswith("pk_enroll_")
    listed = client.simulate_get(f"/v1/admin/enrollment-keys/{resp.json['id']}", headers=bearer(acme.admin_token))
    assert "enrollment_key" not in listed.json and listed.json["key_prefix"] == resp.json["key_prefix"]
    other = client.simulate_post(
        "/v1/admin/enrollment-keys", headers=bearer(acme.admin_token), json={**body, "customer_id": globex.customer.id}
    )
    assert other.status_code == 404
    op = client.simulate_post(
        "/v1/admin/enrollment-keys", headers=bearer(operator_token()), json={**body, "customer_id": "globex"}
    )
    assert op.status_code == 201 and op.json["customer_id"] == globex.customer.id
    bad_domain = client.simulate_post(
        "/v1/admin/enrollment-keys",
        headers=bearer(acme.admin_token),
        json={**body, "allowed_domains": ["globex.agents.localhost"]},
    )
    assert bad_domain.status_code == 422 and bad_domain.json["error"]["field"] == "allowed_domains"


def test_every_action_and_denial_is_audited(client):
    acme = make_tenant("acme")
    _, token = acme.enrollment_key(scopes=["mailbox:read"])
    key = enroll(client, token).json["agent_key"]
    client.simulate_get("/v1/me", headers=bearer(key))
    client.simulate_post("/v1/inboxes", headers=bearer(key), json={})
    client.simulate_get("/v1/me", headers=bearer("pk_agent_" + "x" * 49))
    rows = list(AuditEvent.select().order_by(AuditEvent.id))
    by_action = [(r.action, r.outcome, r.code) for r in rows]
    assert ("enroll", "ok", None) in by_action
    assert ("me.read", "ok", None) in by_action
    assert ("inbox.create", "denied", "insufficient_scope") in by_action
    assert ("auth", "denied", "invalid_key") in by_action
    enroll_row = next(r for r in rows if r.action == "enroll")
    assert enroll_row.customer_id == acme.customer.id and enroll_row.agent_id and enroll_row.enrollment_id
    assert enroll_row.client_addr and enroll_row.request_id.startswith("req_")
    denied = next(r for r in rows if r.code == "insufficient_scope")
    assert denied.key_prefix.startswith("pk_agent_") and denied.agent_id == enroll_row.agent_id
    audit = client.simulate_get("/v1/admin/audit?outcome=denied", headers=bearer(acme.admin_token)).json
    assert {e["code"] for e in audit["data"]} == {"insufficient_scope"}  # the anonymous failure has no tenant
    first = client.simulate_get("/v1/admin/audit?limit=2", headers=bearer(acme.admin_token)).json
    second = client.simulate_get(
        f"/v1/admin/audit?limit=2&page_token={first['next_page_token']}", headers=bearer(acme.admin_token)
    ).json
    assert first["data"][0]["id"] > first["data"][1]["id"] > second["data"][0]["id"]


def test_core_refusals_are_typed(db):
    acme = make_tenant("acme")
    with pytest.raises(InvalidInput):
        acme.enrollment_key(scopes=["mailbox:delete"])
    with pytest.raises(InvalidInput):
        acme.enrollment_key(scopes=[])
    with pytest.raises(InvalidInput):
        acme.enrollment_key(max_mailboxes=-1)
    _, token = acme.enrollment_key(max_redemptions=1)
    enrollment.redeem(INFO, token, "a", agent_key_ttl=dt.timedelta(hours=1))
    with pytest.raises(PermissionDenied):
        enrollment.redeem(INFO, token, "b", agent_key_ttl=dt.timedelta(hours=1))
    with pytest.raises(AuthenticationFailed):
        typo = token[:-1] + ("1" if token.endswith("0") else "0")  # always a different checksum
        enrollment.redeem(INFO, typo, "a", agent_key_ttl=dt.timedelta(hours=1))


def test_read_audit_relaxes_and_restores_sqlite_durability(db):
    from postern.core import audit
    from postern.core.principal import CLI

    if not isinstance(db, __import__("peewee").SqliteDatabase):
        pytest.skip("SQLite durability setting")
    full = db.execute_sql("PRAGMA synchronous").fetchone()[0]
    assert full == 2  # FULL: acknowledged mail survives power loss
    audit.record_read("customer.list", principal=CLI, info=INFO)
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == full
    assert AuditEvent.select().where(AuditEvent.action == "customer.list").count() == 1


def test_redeeming_again_with_a_known_handle_is_a_renewal(client):
    """Issue 19 item 5: a renewal is the same agent, is not counted against
    max_redemptions (which limits how many agents a key makes), and is audited apart."""
    acme = make_tenant("acme")
    row, token = acme.enrollment_key(max_redemptions=1)
    first = enroll(client, token, "bot")
    assert first.status_code == 201 and first.json["renewed"] is False
    for _ in range(3):
        again = enroll(client, token, "bot")
        assert again.status_code == 201, again.text
        assert again.json["renewed"] is True and again.json["agent_id"] == first.json["agent_id"]
        assert again.json["agent_key"] != first.json["agent_key"]
    assert EnrollmentKey.get_by_id(row.id).redemptions == 1
    other = enroll(client, token, "another-bot")
    assert other.status_code == 403 and other.json["error"]["code"] == "redemption_limit_reached"
    actions = [(e.action, e.outcome) for e in AuditEvent.select().where(AuditEvent.enrollment_id == row.id)]
    assert actions.count(("enroll", "ok")) == 1 and actions.count(("enroll.renew", "ok")) == 3
    enrollment.revoke_enrollment_key(acme_principal(acme), INFO, row.id, revoke_agent_keys=False)
    refused = enroll(client, token, "bot")
    assert refused.status_code == 401 and refused.json["error"]["code"] == "key_revoked"
    EnrollmentKey.update(revoked_at=None, expires_at=utcnow() - dt.timedelta(seconds=1)).where(
        EnrollmentKey.id == row.id
    ).execute()
    expired = enroll(client, token, "bot")
    assert expired.status_code == 401 and expired.json["error"]["code"] == "key_expired"
