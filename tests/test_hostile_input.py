"""Regression tests from the security review: hostile input gets a clean 4xx, is
audited when it is a refusal, and never reaches the database as a 500."""

import falcon.testing
import pytest
from click.testing import CliRunner
from support.world import make_tenant, operator_token

from postern.api import create_app
from postern.cli import cli
from postern.core.models import AdminToken, AgentKey, AuditEvent, Inbox, utcnow
from postern.core.runtime import build_postern


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_domains_with_whitespace_are_refused(client):
    acme = make_tenant("acme")
    for domain in ["x\n.acme.agents.localhost", "x .acme.agents.localhost", "x\u2028.acme.agents.localhost", "x\t"]:
        resp = client.simulate_post(
            "/v1/admin/enrollment-keys",
            headers=bearer(acme.admin_token),
            json={"scopes": ["mailbox:create"], "max_mailboxes": 1, "allowed_domains": [domain]},
        )
        assert resp.status_code == 422 and resp.json["error"]["field"] == "allowed_domains", domain


@pytest.mark.parametrize(
    "path, query",
    [
        ("/v1/inboxes/a%00b", ""),
        ("/v1/inboxes", "page_token=a%00"),
        ("/v1/admin/audit", "action=a%00"),
        ("/v1/admin/enrollment-keys/enr_%00", ""),
    ],
)
def test_nul_in_path_or_query_is_a_400(client, path, query):
    acme = make_tenant("acme")
    key = acme.agent_key().agent_key if not path.startswith("/v1/admin") else acme.admin_token
    resp = client.simulate_get(path, query_string=query, headers=bearer(key))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/admin/customers", {"label": "x", "name": "a\x00b"}, "name"),
        (
            "/v1/admin/enrollment-keys",
            {"scopes": ["mailbox:read"], "max_mailboxes": 1, "description": "\x00"},
            "description",
        ),
        (
            "/v1/admin/enrollment-keys",
            {"customer_id": "a\x00", "scopes": ["mailbox:read"], "max_mailboxes": 1},
            "customer_id",
        ),
    ],
)
def test_nul_in_json_is_a_422(client, path, body, field):
    resp = client.simulate_post(path, headers=bearer(operator_token()), json=body)
    assert resp.status_code == 422 and resp.json["error"]["field"] == field


def test_long_and_malformed_ids_are_404_and_audited(client):
    agent = make_tenant("acme").agent_key()
    for bad in ["x" * 300, "inb_" + "A" * 26, "inb_short", agent.agent_key]:
        resp = client.simulate_get(f"/v1/inboxes/{bad}", headers=bearer(agent.agent_key))
        assert resp.status_code == 404
    rows = list(AuditEvent.select().where(AuditEvent.code == "not_found"))
    assert len(rows) == 4 and all(len(r.target) <= 100 for r in rows)
    assert not any(agent.agent_key in r.target for r in rows)  # a key pasted into a URL is not kept


@pytest.mark.parametrize(
    "path, query",
    [
        ("/v1/admin/audit", "page_token=WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDBd"),  # [10**30]
        ("/v1/admin/audit", "since=0001-01-01T00:00:00%2B01:00"),
        ("/v1/admin/audit", "until=9999-12-31T23:59:59-01:00"),
        ("/v1/admin/audit", "limit=99999999999999999999"),
    ],
)
def test_out_of_range_filters_are_422(client, path, query):
    resp = client.simulate_get(path, query_string=query, headers=bearer(operator_token()))
    assert resp.status_code == 422, resp.text


@pytest.mark.parametrize("value", [10**30, 2**31, 10**6 + 1])
def test_huge_max_redemptions_is_422(client, value):
    make_tenant("acme")
    resp = client.simulate_post(
        "/v1/admin/enrollment-keys",
        headers=bearer(operator_token()),
        json={"customer_id": "acme", "scopes": ["mailbox:read"], "max_mailboxes": 1, "max_redemptions": value},
    )
    assert resp.status_code == 422 and resp.json["error"]["field"] == "max_redemptions"


def test_deeply_nested_json_is_a_400(client):
    resp = client.simulate_post("/v1/enroll", body="[" * 3000, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed_json"


def test_cross_tenant_reads_by_admins_are_audited(client):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    row, _ = globex.enrollment_key()
    resp = client.simulate_get(f"/v1/admin/enrollment-keys/{row.id}", headers=bearer(acme.admin_token))
    assert resp.status_code == 404
    [denied] = AuditEvent.select().where((AuditEvent.outcome == "denied") & (AuditEvent.code == "not_found"))
    assert denied.customer_id == acme.customer.id and denied.target == row.id
    assert denied.action == "GET /v1/admin/enrollment-keys/{}"


def test_a_key_revoked_while_its_body_is_read_stops_the_action(client, monkeypatch):
    import postern.api.inboxes as inboxes_api

    agent = make_tenant("acme").agent_key()
    original = inboxes_api.read_json

    async def slow_read(req, **kwargs):
        AgentKey.update(revoked_at=utcnow()).where(AgentKey.id == agent.key.id).execute()
        return await original(req, **kwargs)

    monkeypatch.setattr(inboxes_api, "read_json", slow_read)
    resp = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={"username": "late"})
    assert resp.status_code == 401 and resp.json["error"]["code"] == "key_revoked"
    assert Inbox.select().count() == 0


def test_scope_is_checked_before_the_body(client):
    agent = make_tenant("acme").agent_key(scopes=["mailbox:read"])
    resp = client.simulate_post(
        "/v1/inboxes", body="{broken", headers={**bearer(agent.agent_key), "Content-Type": "application/json"}
    )
    assert resp.status_code == 403 and resp.json["error"]["code"] == "insufficient_scope"


def test_admin_tokens_can_be_revoked(client, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    acme = make_tenant("acme")
    token = AdminToken.get(AdminToken.customer == acme.customer.id)
    assert client.simulate_get("/v1/admin/customers", headers=bearer(acme.admin_token)).status_code == 200
    result = CliRunner().invoke(cli, ["admin", "token", "revoke", token.id, "--json"], obj={})
    assert result.exit_code == 0, result.output
    resp = client.simulate_get("/v1/admin/customers", headers=bearer(acme.admin_token))
    assert resp.status_code == 401 and resp.json["error"]["code"] == "key_revoked"
    listed = CliRunner().invoke(cli, ["admin", "token", "list"], obj={})
    assert token.id in listed.output and "operator" not in listed.output


# -- Unencodable strings (hardening issue, item 3) -------------------------------------

LONE_SURROGATES = ['"\\ud800"', '"ok\\udfffok"', '"\\udc00\\ud800"']


def every_body_field(client, postern):
    """(method, url, headers, field) for every property of every documented request body,
    with real ids in the path so the request reaches the resource."""
    from support import fuzz
    from test_parser_fuzz import write_operations
    from test_tenancy import objects_of

    acme = make_tenant("acme")
    mine, me = objects_of(postern, acme, "hostile")
    admin_side, _ = objects_of(postern, acme, "adminside")
    for method, path, auth, fields in write_operations(client):
        ids, key = (admin_side, acme.admin_token) if auth == "admin" else (mine, me.agent_key)
        headers = {**(bearer(key) if auth else {}), "Content-Type": "application/json"}
        for field in fields:
            yield method, fuzz.fill_path(path, ids), headers, field


def test_a_lone_surrogate_in_any_body_field_is_a_422(config, db, caplog):
    """``json.loads`` turns ``"\\ud800"`` into a string no UTF-8 encoder accepts; it used to
    reach the database, the log or the response encoder and come back as a 500."""
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    tried = set()
    for method, url, headers, field in every_body_field(client, postern):
        for value in LONE_SURROGATES:
            resp = client.simulate_request(method, url, headers=headers, body=f'{{"{field}": {value}}}')
            assert resp.status_code == 422, (method, url, field, resp.status_code, resp.text[:200])
            error = resp.json["error"]
            assert error["code"] == "invalid_field" and error["field"] == field and "surrogate" in error["message"]
        tried.add((url.split("/")[2], field))
    assert ("enroll", "agent_handle") in tried and ("inboxes", "username") in tried and len(tried) >= 20
    # A surrogate in a field name, or nested in a list, is refused the same way.
    for body in ['{"\\ud800": 1}', '{"username": ["\\ud800"]}', '{"x": {"y": "\\udfff"}}']:
        resp = client.simulate_post("/v1/enroll", body=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422 and "surrogate" in resp.json["error"]["message"], resp.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


NOT_UTF8_QUERIES = ["page_token=%ED%A0%80", "limit=%FF", "%ED%B0%80=1", "page_token=a%C0%80", "x=%E2%82"]


@pytest.mark.parametrize("query", NOT_UTF8_QUERIES)
def test_query_strings_that_are_not_utf8_are_a_400(client, query):
    agent = make_tenant("acme").agent_key()
    for path, key in [("/v1/inboxes", agent.agent_key), ("/v1/admin/audit", operator_token())]:
        resp = client.simulate_get(path, query_string=query, headers=bearer(key))
        assert resp.status_code == 400, resp.text
        assert resp.json["error"]["code"] == "invalid_request" and "UTF-8" in resp.json["error"]["message"]
    # Valid UTF-8, percent-encoded, still reaches the resource.
    resp = client.simulate_get("/v1/inboxes", query_string="page_token=%C3%A9", headers=bearer(agent.agent_key))
    assert resp.status_code == 422 and "page_token" in resp.json["error"]["message"]
