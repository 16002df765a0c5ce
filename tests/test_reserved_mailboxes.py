"""Reserved role mailboxes (hardening issue, item 5): agents cannot create postmaster@,
abuse@, admin@... (RFC 2142, and the addresses certificate authorities mail to prove
domain control); an operator or org admin can, through the admin API or the CLI."""

from __future__ import annotations

import json

import falcon.testing
import pytest
from click.testing import CliRunner
from support.world import make_tenant, operator_token

from postern.api import create_app
from postern.cli import cli
from postern.core.config import RESERVED_LOCAL_PARTS, ConfigError, load_config
from postern.core.models import AuditEvent, EnrollmentKey, Inbox, utcnow
from postern.core.runtime import build_postern

CA_DOMAIN_CONTROL = {"admin", "administrator", "webmaster", "hostmaster", "postmaster"}
RFC_2142_OPERATIONAL = {"abuse", "noc", "security", "postmaster", "hostmaster", "usenet", "news", "webmaster", "www"}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_the_default_list_covers_rfc_2142_and_the_ca_browser_forum_addresses():
    assert CA_DOMAIN_CONTROL | RFC_2142_OPERATIONAL | {"root"} <= set(RESERVED_LOCAL_PARTS)
    assert not {"support", "info", "sales"} & set(RESERVED_LOCAL_PARTS)  # business names stay usable


@pytest.mark.parametrize("username", [*RESERVED_LOCAL_PARTS, "Postmaster", " ADMIN ", "WebMaster"])
def test_agents_cannot_create_reserved_local_parts(client, username):
    tenant = make_tenant("acme")
    agent = tenant.agent_key()
    resp = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={"username": username})
    assert resp.status_code == 403, resp.text
    error = resp.json["error"]
    assert error["code"] == "reserved_local_part" and error["field"] == "username"
    assert "reserved role address" in error["message"] and "operator or org admin" in error["message"]
    assert Inbox.select().count() == 0
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 0
    [denied] = AuditEvent.select().where(AuditEvent.outcome == "denied")
    assert denied.code == "reserved_local_part" and denied.agent_id == agent.agent.id


@pytest.mark.parametrize("username", ["post.master", "postmaster-bot", "admins", "support", "info", "root2"])
def test_other_names_including_separated_variants_are_ordinary(client, username):
    agent = make_tenant("acme").agent_key()
    resp = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={"username": username})
    assert resp.status_code == 201 and resp.json["username"] == username


def test_an_agent_named_postmaster_gets_a_suffixed_default_address(client):
    agent = make_tenant("acme").agent_key(handle="postmaster")
    resp = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={})
    assert resp.status_code == 201
    assert resp.json["username"].startswith("postmaster-") and resp.json["address"].startswith("postmaster-")


def test_an_org_admin_creates_a_reserved_mailbox_for_its_agent(client):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    agent = acme.agent_key(max_mailboxes=2)
    url = f"/v1/admin/agents/{agent.agent.id}/inboxes"
    resp = client.simulate_post(url, headers=bearer(acme.admin_token), json={"username": "Postmaster"})
    assert resp.status_code == 201, resp.text
    assert resp.json["address"] == f"postmaster@{acme.domain}" and resp.json["agent_id"] == agent.agent.id
    # The agent reads it like any inbox of its enrollment, whose quota it used.
    listed = client.simulate_get("/v1/inboxes", headers=bearer(agent.agent_key)).json["data"]
    assert [i["address"] for i in listed] == [f"postmaster@{acme.domain}"]
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 1
    [row] = AuditEvent.select().where((AuditEvent.action == "inbox.create") & (AuditEvent.outcome == "ok"))
    assert row.actor == "admin" and row.customer_id == acme.customer.id and row.target == resp.json["id"]
    # Tenancy: another tenant's admin cannot see the agent; an agent key is not an admin token.
    other = client.simulate_post(url, headers=bearer(globex.admin_token), json={"username": "abuse"})
    assert other.status_code == 404
    wrong_key = client.simulate_post(url, headers=bearer(agent.agent_key), json={"username": "abuse"})
    assert wrong_key.status_code == 403 and wrong_key.json["error"]["code"] == "wrong_key_type"
    # The enrollment's quota and uniqueness hold on this path too.
    again = client.simulate_post(url, headers=bearer(acme.admin_token), json={"username": "postmaster"})
    assert again.status_code == 409 and again.json["error"]["code"] == "address_taken"
    client.simulate_post(url, headers=bearer(acme.admin_token), json={"username": "abuse"})
    full = client.simulate_post(url, headers=bearer(acme.admin_token), json={"username": "root"})
    assert full.status_code == 403 and full.json["error"]["code"] == "quota_exceeded"


def test_no_inbox_for_an_agent_whose_enrollment_is_revoked(client):
    acme = make_tenant("acme")
    agent = acme.agent_key()
    EnrollmentKey.update(revoked_at=utcnow()).where(EnrollmentKey.id == agent.enrollment.id).execute()
    url = f"/v1/admin/agents/{agent.agent.id}/inboxes"
    resp = client.simulate_post(url, headers=bearer(operator_token()), json={"username": "postmaster"})
    assert resp.status_code == 409 and resp.json["error"]["code"] == "enrollment_revoked"
    assert Inbox.select().count() == 0


def test_the_operator_creates_one_from_the_cli(client, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    agent = make_tenant("acme").agent_key()
    args = ["admin", "inbox", "create", "--agent", agent.agent.id, "--username", "abuse", "--json"]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"] == "abuse@acme.agents.localhost"
    [row] = AuditEvent.select().where((AuditEvent.action == "inbox.create") & (AuditEvent.outcome == "ok"))
    assert row.actor == "cli"
    missing = CliRunner().invoke(cli, [*args[:4], "agt_" + "a" * 26, "--username", "root"], obj={})
    assert missing.exit_code != 0 and "no agent" in missing.output


def test_the_operator_chooses_the_list(config, db):
    config.mail.reserved_local_parts = ["sales"]
    client = falcon.testing.TestClient(create_app(build_postern(config)))
    agent = make_tenant("acme").agent_key()
    made = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={"username": "postmaster"})
    assert made.status_code == 201
    refused = client.simulate_post("/v1/inboxes", headers=bearer(agent.agent_key), json={"username": "Sales"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "reserved_local_part"


def test_the_list_is_checked_and_normalised_at_load(tmp_path):
    loaded = load_config(environ={"POSTERN_MAIL_RESERVED_LOCAL_PARTS": "Sales, postmaster"})
    assert loaded.mail.reserved_local_parts == ["postmaster", "sales"]
    (tmp_path / "bad.toml").write_text('[mail]\nreserved_local_parts = ["post master"]\n')
    with pytest.raises(ConfigError, match="mail.reserved_local_parts"):
        load_config(tmp_path / "bad.toml", environ={})
