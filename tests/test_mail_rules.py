"""Allow and block lists (docs/trust.md, "Allow and block lists"): receiving over real
SMTP with verdicts from a real DNS server, matched on the authenticated sender only;
sending refused outside the lists with a clear code; admins manage them over the API
and the CLI, agents read them over the API, the SDK and MCP."""

from __future__ import annotations

import json

import pytest
import test_inbound_policy
from click.testing import CliRunner
from support.world import make_tenant
from test_inbound_policy import ANONYMOUS, PROVEN, SPOOF, admin, agent, send, subjects

from postern.cli import cli
from postern.client import Postern
from postern.core.errors import InvalidInput
from postern.core.mail import rules
from postern.core.mail.verdicts import Verdict
from postern.core.models import AuditEvent, Message, QuarantinedMessage

# The fixtures of test_inbound_policy: its zone, config with verification on, listener, tenant.
zone, config = test_inbound_policy.zone, test_inbound_policy.config
smtp, acme = test_inbound_policy.smtp, test_inbound_policy.acme

# Envelope proven by SPF, From: a domain with no DMARC and nothing aligned.
RELAYED = ("alice@sender.example", "bob@plain.example")


def add(client, tenant, **body):
    resp = admin(client, tenant, "POST", "/v1/admin/mail-rules", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json


# -- matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, stored",
    [
        ("Example.ORG.", "example.org"),
        (" Bob@Example.org ", "bob@example.org"),
        ("mail.example.org", "mail.example.org"),
    ],
)
def test_patterns_are_addresses_or_domains(value, stored):
    assert rules.normalise_pattern(value) == stored


@pytest.mark.parametrize("value", ["", "   ", "@example.org", "not a domain", "a@b@", "bob <b@example.org>", 7, None])
def test_anything_else_is_refused_naming_the_field(value):
    with pytest.raises(InvalidInput) as refused:
        rules.normalise_pattern(value)
    assert refused.value.field == "pattern"


def test_a_domain_covers_its_subdomains_and_nothing_that_merely_ends_like_it():
    assert rules.matches("example.org", "a@example.org") and rules.matches("example.org", "a@mx.example.org")
    assert not rules.matches("example.org", "a@badexample.org")
    assert rules.matches("a@example.org", "A@Example.org") and not rules.matches("a@example.org", "b@example.org")


def test_the_identity_is_what_was_proven_and_nothing_else():
    assert rules.identity_of(Verdict(aligned=True, spf="fail"), "Ann@Sender.example", "x@other.example") == (
        "ann@sender.example"
    )
    assert rules.identity_of(Verdict(spf="pass"), "ceo@victim.example", "bounce@sender.example") == (
        "bounce@sender.example"
    )
    assert rules.identity_of(Verdict(spf="softfail"), "ceo@victim.example", "bounce@sender.example") is None


# -- receiving ------------------------------------------------------------------------


def test_a_blocked_sender_is_refused_whether_or_not_it_authenticates(client, smtp, acme):
    add(client, acme, direction="receive", action="block", pattern="sender.example")
    code, text = send(smtp, PROVEN, [acme.inbox.address], "from alice")
    assert code == 550 and "does not accept mail from this sender" in text
    # Claiming the blocked domain without proving it is refused too: a claim can only
    # get mail refused, and a blocked sender cannot slip past by not authenticating.
    for sender in (("bob@plain.example", "alice@sender.example"), ("x@sender.example", "bob@plain.example")):
        assert send(smtp, sender, [acme.inbox.address], "claimed")[0] == 550
    assert subjects(acme.inbox) == []
    # Others are not touched by it.
    assert send(smtp, ANONYMOUS, [acme.inbox.address], "other") == (250, "")
    assert subjects(acme.inbox) == ["other"]


def test_an_inbox_allowlist_holds_everyone_else_and_binds_that_inbox_only(client, smtp, acme):
    add(client, acme, direction="receive", action="allow", pattern="sender.example", inbox_id=acme.inbox.id)
    assert send(smtp, PROVEN, [acme.inbox.address], "proven") == (250, "")
    assert send(smtp, ANONYMOUS, [acme.inbox.address], "anonymous") == (250, "")
    assert subjects(acme.inbox) == ["proven"]
    assert [(q.subject, q.reason) for q in QuarantinedMessage.select()] == [("anonymous", "not_allowed")]
    assert send(smtp, ANONYMOUS, [acme.other.address], "elsewhere") == (250, "")
    assert subjects(acme.other) == ["elsewhere"]


def test_an_allowlist_lets_through_only_proven_senders_and_never_lifts_the_policy(client, smtp, acme):
    add(client, acme, direction="receive", action="allow", pattern="alice@sender.example")
    # An SPF-proven envelope matches the entry: not held as not_allowed, and delivered,
    # marked, under the default unauthenticated policy.
    assert send(smtp, RELAYED, [acme.inbox.address], "relayed") == (250, "")
    assert subjects(acme.inbox) == ["relayed"]
    # A forged From of the allowed address, unproven, is not on the list.
    assert send(smtp, ("bob@plain.example", "alice@sender.example"), [acme.inbox.address], "forged") == (250, "")
    # Allowed by its envelope, but its From: claims a p=reject domain it failed.
    assert send(smtp, SPOOF, [acme.inbox.address], "spoof") == (250, "")
    held = {(q.subject, q.reason) for q in QuarantinedMessage.select()}
    assert held == {("forged", "not_allowed"), ("spoof", "dmarc_reject")}
    # The list never lifts the policy: with unauthenticated=refuse the relayed mail,
    # whose From nothing aligns with, is refused although its envelope is allowed.
    admin(client, acme, "PUT", "/v1/admin/inbound-policy", json={"unauthenticated": "refuse"})
    assert send(smtp, RELAYED, [acme.inbox.address], "relayed again")[0] == 550


def test_a_block_wins_over_an_allow_and_enrollment_entries_bind_its_inboxes_only(client, postern, smtp, acme):
    from support.world import seed_inbox

    add(client, acme, direction="receive", action="allow", pattern="sender.example")
    add(
        client,
        acme,
        direction="receive",
        action="block",
        pattern="alice@sender.example",
        enrollment_id=acme.enrolled.enrollment.id,
    )
    assert send(smtp, PROVEN, [acme.inbox.address], "blocked")[0] == 550
    elsewhere = seed_inbox(postern, acme.agent_key(handle="other-team"), username="team")
    assert send(smtp, PROVEN, [elsewhere.address], "allowed") == (250, "")
    assert subjects(elsewhere) == ["allowed"]


# -- sending ---------------------------------------------------------------------------


def test_sends_outside_the_lists_are_refused_with_a_clear_code(client, acme):
    box = acme.inbox
    add(client, acme, direction="send", action="allow", pattern="example.org", inbox_id=box.id)
    add(client, acme, direction="send", action="block", pattern="hr.example.org")
    path = f"/v1/inboxes/{box.id}/messages"

    def send_to(**recipients):
        return agent(client, acme, "POST", path, json={"subject": "s", "text": "t", **recipients})

    assert send_to(to=["bob@example.org"]).status_code == 201
    for recipients, code in (
        ({"to": ["x@other.test"]}, "recipient_not_allowed"),
        ({"to": ["bob@example.org"], "bcc": ["x@other.test"]}, "recipient_not_allowed"),
        ({"to": ["boss@hr.example.org"]}, "recipient_blocked"),  # a block wins over the allow
    ):
        refused = send_to(**recipients)
        assert (refused.status_code, refused.json["error"]["code"]) == (403, code), refused.text
    assert Message.select().where((Message.inbox == box.id) & (Message.direction == "outbound")).count() == 1
    denied = AuditEvent.select().where(AuditEvent.outcome == "denied")
    assert sorted((e.code, e.target) for e in denied) == [
        ("recipient_blocked", box.id),
        ("recipient_not_allowed", box.id),
        ("recipient_not_allowed", box.id),
    ]
    # Another inbox of the tenant is not bound by this inbox's allowlist.
    other = agent(
        client,
        acme,
        "POST",
        f"/v1/inboxes/{acme.other.id}/messages",
        json={"to": ["x@other.test"], "subject": "s", "text": "t"},
    )
    assert other.status_code == 201


# -- managing and reading ----------------------------------------------------------------


def test_admins_manage_entries_and_agents_only_read_those_that_bind_them(client, served, acme):
    box, other = acme.inbox, acme.other
    mine = add(client, acme, direction="receive", action="allow", pattern="sender.example", inbox_id=box.id)
    assert (mine["level"], mine["inbox_id"], mine["enrollment_id"]) == ("inbox", box.id, None)
    wide = add(client, acme, direction="send", action="block", pattern="rival.example", description="no")
    assert wide["level"] == "customer"
    theirs = add(client, acme, direction="receive", action="block", pattern="x.example", inbox_id=other.id)
    bad = [
        ({"direction": "both", "action": "allow", "pattern": "a.example"}, "direction"),
        ({"direction": "send", "action": "permit", "pattern": "a.example"}, "action"),
        ({"direction": "send", "action": "allow", "pattern": "not a domain"}, "pattern"),
        ({"direction": "send", "action": "allow", "pattern": "a.example", "colour": "red"}, "colour"),
        (
            {
                "direction": "send",
                "action": "allow",
                "pattern": "a.example",
                "inbox_id": box.id,
                "enrollment_id": "enr_x",
            },
            "enrollment_id",
        ),
    ]
    for body, field in bad:
        resp = admin(client, acme, "POST", "/v1/admin/mail-rules", json=body)
        assert (resp.status_code, resp.json["error"]["field"]) == (422, field), resp.text
    listed = admin(client, acme, "GET", "/v1/admin/mail-rules", params={"direction": "receive"}).json["data"]
    assert [r["id"] for r in listed] == [mine["id"], theirs["id"]]
    # The agent sees what binds box (its own entry and the customer's), and cannot change it.
    seen = agent(client, acme, "GET", f"/v1/inboxes/{box.id}/mail-rules").json["data"]
    assert {r["id"] for r in seen} == {mine["id"], wide["id"]}
    assert (
        agent(
            client,
            acme,
            "POST",
            "/v1/admin/mail-rules",
            json={"direction": "send", "action": "allow", "pattern": "a.example"},
        ).status_code
        == 403
    )
    assert agent(client, acme, "DELETE", f"/v1/admin/mail-rules/{mine['id']}").status_code == 403
    # The SDK reads the same.
    postern, transport = served
    sdk = Postern(api_key=acme.enrolled.agent_key, base_url="http://postern.test", transport=transport)
    assert {(r.direction, r.action, r.pattern, r.level) for r in sdk.inboxes.mail_rules(box.id)} == {
        ("receive", "allow", "sender.example", "inbox"),
        ("send", "block", "rival.example", "customer"),
    }
    # Another tenant's admin can neither see nor remove them.
    globex = make_tenant("globex")
    assert admin(client, globex, "GET", "/v1/admin/mail-rules").json["data"] == []
    assert admin(client, globex, "DELETE", f"/v1/admin/mail-rules/{mine['id']}").status_code == 404
    assert admin(client, acme, "DELETE", f"/v1/admin/mail-rules/{mine['id']}").status_code == 204
    assert admin(client, acme, "GET", f"/v1/admin/mail-rules/{mine['id']}").status_code == 404
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.outcome == "ok")]
    assert actions.count("mail_rule.create") == 3 and "mail_rule.delete" in actions


def test_the_cli_adds_lists_and_removes_entries(env, monkeypatch, acme):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def run(*args):
        result = CliRunner().invoke(cli, list(args), obj={})
        assert result.exit_code == 0, result.output
        return result.stdout

    made = json.loads(run("admin", "rule", "add", "send", "allow", "Example.org", "--inbox", acme.inbox.id, "--json"))
    assert (made["pattern"], made["level"]) == ("example.org", "inbox")
    run("admin", "rule", "add", "receive", "block", "spam.example", "--customer", "acme")
    lines = run("admin", "rule", "list", "--direction", "receive").splitlines()
    assert len(lines) == 1 and "\treceive\tblock\tspam.example\tcustomer " in lines[0]
    assert "removed" in run("admin", "rule", "remove", made["id"])
    assert json.loads(run("admin", "rule", "list", "--json"))[0]["pattern"] == "spam.example"
    refused = CliRunner().invoke(cli, ["admin", "rule", "add", "send", "allow", "x.example"], obj={})
    assert refused.exit_code != 0 and "--customer" in refused.output


def test_mail_between_postern_inboxes_meets_the_recipients_receive_lists(client, postern, acme):
    """Agent to agent mail never crosses a listener, and its sender is certain: the
    recipient's receive entries refuse the send outright."""
    from support.world import seed_inbox

    stranger = seed_inbox(postern, make_tenant("globex").agent_key(handle="g"), username="stranger")
    add(client, acme, direction="receive", action="allow", pattern="partner.example", inbox_id=acme.inbox.id)
    add(client, acme, direction="receive", action="block", pattern="agents.localhost", inbox_id=acme.other.id)
    body = {"subject": "hello", "text": "t"}
    headers = {"Authorization": f"Bearer {acme.enrolled.agent_key}"}
    for target in (acme.inbox, acme.other):
        resp = client.simulate_post(
            f"/v1/inboxes/{acme.inbox.id if target is acme.other else acme.other.id}/messages",
            json={**body, "to": [target.address]},
            headers=headers,
        )
        assert (resp.status_code, resp.json["error"]["code"]) == (403, "recipient_refuses_sender"), resp.text
        assert target.address in resp.json["error"]["message"]
    # An inbox with no entries takes it, as before.
    resp = client.simulate_post(
        f"/v1/inboxes/{acme.inbox.id}/messages", json={**body, "to": [stranger.address]}, headers=headers
    )
    assert resp.status_code == 201, resp.text
    assert Message.select().where((Message.inbox == stranger.id) & (Message.subject == "hello")).count() == 1
