"""Suspending a customer (operators): its keys are refused, its enrollment keys cannot be
redeemed, mail to it is deferred at RCPT, its queued mail waits; resuming undoes it all."""

from __future__ import annotations

import smtplib

import pytest
from click.testing import CliRunner
from support.fuzz import RunningSmtp
from support.world import INFO, make_tenant, operator_token, seed_inbox
from test_console import FORM, csrf_of, post, sign_in

from postern.cli.app import cli
from postern.core import tenancy
from postern.core.mail.delivery import deliver
from postern.core.models import AuditEvent, Customer, Message
from postern.core.principal import CLI


@pytest.fixture
def acme(postern):
    tenant = make_tenant("acme")
    tenant.enrolled = tenant.agent_key(handle="bot")
    tenant.inbox = seed_inbox(postern, tenant.enrolled, "bot")
    return tenant


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_a_suspended_customers_keys_are_refused_until_it_is_resumed(client, acme):
    operator = operator_token()
    assert client.simulate_get("/v1/me", headers=bearer(acme.enrolled.agent_key)).status_code == 200
    done = client.simulate_post(f"/v1/admin/customers/{acme.customer.id}/suspend", headers=bearer(operator))
    assert done.status_code == 200 and done.json["suspended_at"]
    for path, key in (("/v1/me", acme.enrolled.agent_key), ("/v1/admin/agents", acme.admin_token)):
        refused = client.simulate_get(path, headers=bearer(key))
        assert refused.status_code == 403 and refused.json["error"]["code"] == "customer_suspended", path
    _, plaintext = acme.enrollment_key()
    enroll = client.simulate_post("/v1/enroll", json={"enrollment_token": plaintext, "agent_handle": "new"})
    assert enroll.status_code == 403 and enroll.json["error"]["code"] == "customer_suspended"
    # Another customer is untouched.
    other = make_tenant("bolt").agent_key(handle="x")
    assert client.simulate_get("/v1/me", headers=bearer(other.agent_key)).status_code == 200
    resumed = client.simulate_post(f"/v1/admin/customers/{acme.customer.id}/resume", headers=bearer(operator))
    assert resumed.status_code == 200 and resumed.json["suspended_at"] is None
    assert client.simulate_get("/v1/me", headers=bearer(acme.enrolled.agent_key)).status_code == 200
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.customer_id == acme.customer.id)]
    assert "customer.suspend" in actions and "customer.resume" in actions
    assert AuditEvent.select().where(AuditEvent.code == "customer_suspended").count() == 3


def test_only_operators_suspend(client, acme):
    refused = client.simulate_post(f"/v1/admin/customers/{acme.customer.id}/suspend", headers=bearer(acme.admin_token))
    assert refused.status_code == 403 and refused.json["error"]["code"] == "operator_only"
    assert Customer.get_by_id(acme.customer.id).suspended_at is None
    missing = client.simulate_post("/v1/admin/customers/cus_nosuchcustomer/suspend", headers=bearer(operator_token()))
    assert missing.status_code == 404


def test_mail_to_a_suspended_customer_is_deferred_not_refused(postern, acme):
    server = RunningSmtp(postern)
    try:
        tenancy.set_suspended(CLI, INFO, "acme", True)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.ehlo("sender.example")
            smtp.mail("someone@example.org")
            code, text = smtp.rcpt(acme.inbox.address)
            assert code == 450 and b"4.2.1" in text
            assert smtp.rcpt("nobody@acme.agents.localhost")[0] == 550  # unknown stays unknown
        tenancy.set_suspended(CLI, INFO, "acme", False)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.sendmail("someone@example.org", [acme.inbox.address], b"Subject: back\r\n\r\nhello\r\n")
        assert Message.select().where((Message.inbox == acme.inbox.id) & (Message.subject == "back")).count() == 1
    finally:
        server.stop()


def test_queued_mail_of_a_suspended_customer_waits_without_using_attempts(client, postern, acme):
    sent = client.simulate_post(
        f"/v1/inboxes/{acme.inbox.id}/messages",
        headers=bearer(acme.enrolled.agent_key),
        json={"to": ["someone@example.org"], "subject": "out", "text": "hi"},
    )
    assert sent.status_code == 201
    Message.update(status="queued", attempts=0).where(Message.id == sent.json["id"]).execute()
    tenancy.set_suspended(CLI, INFO, "acme", True)
    held = deliver(postern, sent.json["id"])
    assert held.status == "queued" and held.attempts == 0 and held.error == "customer suspended"
    assert held.next_attempt_at is not None
    tenancy.set_suspended(CLI, INFO, "acme", False)
    assert deliver(postern, sent.json["id"]).status != "queued"


def test_the_cli_suspends_and_resumes(env, db, acme, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = CliRunner().invoke(cli, ["admin", "customer", "suspend", "acme"])
    assert out.exit_code == 0 and "suspended" in out.output
    assert Customer.get_by_id(acme.customer.id).suspended_at is not None
    out = CliRunner().invoke(cli, ["admin", "customer", "resume", "acme", "--json"])
    assert out.exit_code == 0 and '"suspended_at": null' in out.output


def test_the_console_suspends_and_a_suspended_org_admin_is_signed_out(client, acme):
    org = sign_in(client, acme.admin_token)
    operator = sign_in(client, operator_token())
    csrf = csrf_of(client, operator)
    assert "Suspend acme" in client.simulate_get("/console/customers", cookies=operator).text
    assert post(client, f"/console/customers/{acme.customer.id}/suspend", operator).status_code == 403  # no CSRF
    assert post(client, f"/console/customers/{acme.customer.id}/suspend", operator, csrf).status_code == 303
    assert "Resume acme" in client.simulate_get("/console/customers", cookies=operator).text
    assert client.simulate_get("/console", cookies=org).status_code == 303  # the org admin's session ended
    again = client.simulate_post("/console/login", body=f"token={acme.admin_token}", headers=FORM)
    assert again.status_code == 403 and "suspended" in again.text
    # An org admin cannot suspend, not even its own customer.
    assert post(client, f"/console/customers/{acme.customer.id}/resume", operator, csrf).status_code == 303
    org = sign_in(client, acme.admin_token)
    refused = post(client, f"/console/customers/{acme.customer.id}/suspend", org, csrf_of(client, org))
    assert refused.status_code == 403 and Customer.get_by_id(acme.customer.id).suspended_at is None


# -- deletion ------------------------------------------------------------------------


def rows_of(customer_id: str) -> dict:
    from test_tenancy import tenant_snapshot

    return {name: rows for name, rows in tenant_snapshot(customer_id).items() if rows}


def test_a_suspended_customer_is_deleted_with_everything_it_owns(client, postern, acme):
    from support.world import seed_webhook

    from postern.core.zones import build_zone

    seed_webhook(postern, acme.enrolled)
    other = make_tenant("bolt")
    other_inbox = seed_inbox(postern, other.agent_key(handle="ops"), "ops")
    theirs = rows_of(other.customer.id)
    assert build_zone(postern, acme.domain) is not None
    operator = bearer(operator_token())
    early = client.simulate_delete(f"/v1/admin/customers/{acme.customer.id}", headers=operator)
    assert early.status_code == 409 and early.json["error"]["code"] == "customer_not_suspended"
    assert rows_of(acme.customer.id)["Inbox"]
    client.simulate_post(f"/v1/admin/customers/{acme.customer.id}/suspend", headers=operator)
    gone = client.simulate_delete(f"/v1/admin/customers/{acme.customer.id}", headers=operator)
    assert gone.status_code == 204
    assert rows_of(acme.customer.id) == {}
    assert Message.select().where(Message.inbox == acme.inbox.id).count() == 0
    assert build_zone(postern, acme.domain) is None  # its DNS zone no longer answers
    assert rows_of(other.customer.id) == theirs and other_inbox.address
    deleted = AuditEvent.get(AuditEvent.action == "customer.delete")
    assert deleted.target == acme.customer.id
    # The log outlives the rows: the customer's audit history is still there.
    assert AuditEvent.select().where(AuditEvent.customer_id == acme.customer.id).count() > 3
    again = client.simulate_delete(f"/v1/admin/customers/{acme.customer.id}", headers=operator)
    assert again.status_code == 404


def test_org_admins_cannot_delete_customers(client, acme):
    tenancy.set_suspended(CLI, INFO, "acme", True)
    other = make_tenant("bolt")
    own = client.simulate_delete(f"/v1/admin/customers/{other.customer.id}", headers=bearer(other.admin_token))
    assert own.status_code == 403 and own.json["error"]["code"] == "operator_only"
    foreign = client.simulate_delete(f"/v1/admin/customers/{acme.customer.id}", headers=bearer(other.admin_token))
    assert foreign.status_code == 404
    assert Customer.get_or_none(Customer.id == acme.customer.id) is not None


def test_the_cli_and_console_delete_customers(env, db, client, acme, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tenancy.set_suspended(CLI, INFO, "acme", True)
    refused = CliRunner().invoke(cli, ["admin", "customer", "delete", "acme"], input="n\n")
    assert refused.exit_code != 0 and Customer.get_or_none(Customer.label == "acme") is not None
    out = CliRunner().invoke(cli, ["admin", "customer", "delete", "acme", "--yes"])
    assert out.exit_code == 0, out.output
    assert Customer.get_or_none(Customer.label == "acme") is None
    bolt = make_tenant("bolt")
    tenancy.set_suspended(CLI, INFO, "bolt", True)
    operator = sign_in(client, operator_token())
    page = client.simulate_get("/console/customers", cookies=operator).text
    assert "Delete bolt" in page
    assert post(client, f"/console/customers/{bolt.customer.id}/delete", operator).status_code == 403  # no CSRF
    done = post(client, f"/console/customers/{bolt.customer.id}/delete", operator, csrf_of(client, operator))
    assert done.status_code == 303 and Customer.get_or_none(Customer.id == bolt.customer.id) is None
