"""Inbound policy and quarantine (docs/trust.md, "Policy"): over real SMTP into
smtp_local's listener, verdicts from a real DNS server on 127.0.0.1, the policy set and
the quarantine worked through the admin API and the CLI."""

from __future__ import annotations

import json
import smtplib

import pytest
from click.testing import CliRunner
from support.fuzz import RunningSmtp
from support.world import make_tenant, seed_inbox
from support.zone_dns import ZoneDns

from postern.cli import cli
from postern.core.mail import policy
from postern.core.mail.verdicts import Signature, Verdict
from postern.core.models import AuditEvent, Message, QuarantinedMessage

# The listener sees every client as 127.0.0.1: sender.example's SPF lets it send.
RECORDS = {
    ("sender.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("_dmarc.victim.example", "TXT"): ["v=DMARC1; p=reject"],
    ("_dmarc.sender.example", "TXT"): ["v=DMARC1; p=none"],
}
SPOOF = ("alice@sender.example", "ceo@victim.example")  # SPF passes for sender.example only
ANONYMOUS = ("bob@plain.example", "bob@plain.example")  # no SPF, no DKIM, no DMARC
PROVEN = ("alice@sender.example", "alice@sender.example")  # SPF pass, aligned


@pytest.fixture
def zone():
    server = ZoneDns(RECORDS)
    yield server
    server.close()


@pytest.fixture
def config(config, zone):
    config.trust.verify, config.trust.resolver, config.trust.dns_timeout = True, zone.address, 1
    return config


@pytest.fixture
def smtp(postern):
    server = RunningSmtp(postern)
    yield server
    server.stop()


@pytest.fixture
def acme(postern):
    tenant = make_tenant("acme")
    enrolled = tenant.agent_key(handle="box", max_mailboxes=5)
    tenant.enrolled = enrolled
    tenant.inbox = seed_inbox(postern, enrolled, username="box")
    tenant.other = seed_inbox(postern, enrolled, username="other")
    return tenant


def send(smtp, sender, rcpts, subject="Pay now") -> tuple[int, str]:
    envelope, header_from = sender
    raw = f"From: {header_from}\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n\r\nWire the money today.\r\n"
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=30) as client:
        try:
            client.sendmail(envelope, rcpts, raw.encode())
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, ""


def send_for_reply(smtp, sender, rcpts, subject="Pay now") -> str:
    """The text of the 250 to DATA."""
    envelope, header_from = sender
    raw = f"From: {header_from}\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n\r\nWire the money today.\r\n"
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=30) as client:
        client.ehlo()
        client.mail(envelope)
        for rcpt in rcpts:
            client.rcpt(rcpt)
        code, text = client.data(raw.encode())
    assert code == 250, text
    return text.decode()


def subjects(inbox) -> list[str]:
    """What the inbox holds for its agent, the seed message aside."""
    query = Message.select().where((Message.inbox == inbox.id) & (Message.subject != "seed"))
    return sorted(m.subject for m in query)


def admin(client, tenant, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {tenant.admin_token}"}
    return client.simulate_request(method, path, headers=headers, **kwargs)


def agent(client, tenant, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {tenant.enrolled.agent_key}"}
    return client.simulate_request(method, path, headers=headers, **kwargs)


# -- deciding ---------------------------------------------------------------------------


STRICT = policy.Policy(dmarc_reject="refuse", unauthenticated="quarantine")


@pytest.mark.parametrize(
    "verdict, expected",
    [
        (Verdict(dmarc="pass", aligned=True, verified_sender=True), policy.DELIVER),
        (Verdict(dmarc="none", aligned=True), policy.DELIVER),  # aligned, no DMARC: authenticated
        (Verdict(dmarc="fail", dmarc_policy="reject"), policy.Decision("refuse", "dmarc_reject")),
        (Verdict(dmarc="fail", dmarc_policy="quarantine"), policy.Decision("quarantine", "unauthenticated")),
        (Verdict(spf="none"), policy.Decision("quarantine", "unauthenticated")),
        (Verdict(spf="temperror"), policy.Decision("quarantine", "unauthenticated", temporary=True)),
        # The From domain's policy unread (DNS): answered as if it were p=reject, for now.
        (Verdict(dmarc="temperror"), policy.Decision("refuse", "dmarc_reject", temporary=True)),
        (
            Verdict(dkim=[Signature("x.example", "s", "temperror")]),
            policy.Decision("quarantine", "unauthenticated", temporary=True),
        ),
    ],
)
def test_each_verdict_gets_its_answer(verdict, expected):
    assert policy.decide(verdict, STRICT) == expected


def test_an_unread_dmarc_record_defers_only_where_p_reject_is_refused():
    unread = Verdict(dmarc="temperror", spf="temperror")
    assert policy.decide(unread, policy.Policy("refuse", "deliver")) == policy.Decision(
        "refuse", "dmarc_reject", temporary=True
    )
    # The defaults: a DNS outage does not fill the quarantine; the mail is delivered, marked.
    assert policy.decide(unread, policy.Policy("quarantine", "deliver")).action == "deliver"
    assert policy.refusal({"a": policy.decide(unread, policy.Policy("refuse", "deliver"))}).startswith("451 4.7.0")


def test_the_stricter_answer_wins_when_both_questions_apply():
    failed = Verdict(dmarc="fail", dmarc_policy="reject")
    assert policy.decide(failed, policy.Policy("deliver", "refuse")) == policy.Decision("refuse", "unauthenticated")
    assert policy.decide(failed, policy.Policy("quarantine", "deliver")).action == "quarantine"


def test_one_refusing_recipient_beside_one_that_takes_it_is_held_not_refused():
    refuse, deliver = policy.Decision("refuse", "unauthenticated"), policy.DELIVER
    assert policy.refusal({"a": refuse, "b": deliver}) is None
    assert policy.held({"a": refuse, "b": deliver}) == {"a": "unauthenticated"}
    assert policy.refusal({"a": refuse}).startswith("550 5.7.1 ")
    assert policy.refusal({"a": policy.Decision("refuse", "x", temporary=True)}).startswith("451 4.7.0 ")


# -- over SMTP ---------------------------------------------------------------------------


def test_by_default_a_dmarc_reject_failure_is_held_and_the_agent_never_sees_it_until_released(client, smtp, acme):
    box = acme.inbox
    reply = send_for_reply(smtp, SPOOF, [box.address])
    assert reply.startswith("2.0.0 OK stored as msg_")  # the same answer as a stored copy's
    reply_id = reply.split()[-1]
    assert subjects(box) == []
    [held] = QuarantinedMessage.select()
    assert (held.inbox_id, held.reason, held.from_address) == (box.id, "dmarc_reject", "ceo@victim.example")
    # The agent: not in its list, its wait times out, the id is unknown to it.
    listing = agent(client, acme, "GET", f"/v1/inboxes/{box.id}/messages").json["data"]
    assert [m["subject"] for m in listing] == ["seed"]
    wait = agent(client, acme, "GET", f"/v1/inboxes/{box.id}/messages/wait", params={"timeout": 1})
    assert [m["subject"] for m in wait.json["messages"]] == ["seed"]  # all it has not been given: not the held one
    wait = agent(client, acme, "GET", f"/v1/inboxes/{box.id}/messages/wait", params={"timeout": 1})
    assert wait.json["messages"] == [] and wait.json["timed_out"] is True
    assert agent(client, acme, "GET", f"/v1/admin/quarantine/{held.id}").status_code == 403  # admin realm
    # The human: listed, with the verdict that held it, and readable.
    [item] = admin(client, acme, "GET", "/v1/admin/quarantine").json["data"]
    assert (item["id"], item["reason"], item["subject"]) == (held.id, "dmarc_reject", "Pay now")
    assert (item["authentication"]["dmarc"], item["authentication"]["dmarc_policy"]) == ("fail", "reject")
    detail = admin(client, acme, "GET", f"/v1/admin/quarantine/{held.id}").json
    assert "Wire the money today." in detail["text"]
    assert any(n.lower() == "authentication-results" and "dmarc=fail" in v for n, v in detail["headers"])
    # Another tenant's admin sees nothing of it.
    globex = make_tenant("globex")
    assert admin(client, globex, "GET", "/v1/admin/quarantine").json["data"] == []
    assert admin(client, globex, "POST", f"/v1/admin/quarantine/{held.id}/release").status_code == 404
    from postern.core import quarantine
    from postern.core.principal import CLI

    [listed] = quarantine.visible_held(CLI)
    assert listed.id == held.id and listed.raw is None  # listings never load the message
    # Released: new mail for the agent, verdict kept, once, under the id the 250 gave.
    cursor = wait.json["cursor"]
    released = admin(client, acme, "POST", f"/v1/admin/quarantine/{held.id}/release")
    assert released.status_code == 200, released.text
    assert released.json["authentication"]["dmarc"] == "fail" and released.json["verified_sender"] is False
    assert released.json["id"] == held.message_id == reply_id
    wait = agent(client, acme, "GET", f"/v1/inboxes/{box.id}/messages/wait", params={"timeout": 5, "after": cursor})
    assert [m["id"] for m in wait.json["messages"]] == [released.json["id"]]
    assert subjects(box) == ["Pay now"] and QuarantinedMessage.select().count() == 0
    assert admin(client, acme, "POST", f"/v1/admin/quarantine/{held.id}/release").status_code == 404
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == held.id)]
    assert "quarantine.release" in actions


def test_refuse_answers_550_at_data_and_keeps_nothing(client, smtp, acme):
    resp = admin(client, acme, "PUT", "/v1/admin/inbound-policy", json={"dmarc_reject": "refuse"})
    assert resp.status_code == 200, resp.text
    code, text = send(smtp, SPOOF, [acme.inbox.address])
    assert code == 550 and text.startswith("5.7.1 ") and "p=reject" in text
    assert subjects(acme.inbox) == [] and QuarantinedMessage.select().count() == 0


def test_an_inbox_policy_overrides_its_customers_and_mixed_recipients_are_held(client, smtp, acme):
    box, other = acme.inbox, acme.other
    resp = admin(client, acme, "PUT", f"/v1/admin/inboxes/{box.id}/inbound-policy", json={"unauthenticated": "refuse"})
    assert resp.json["effective"] == {"dmarc_reject": "quarantine", "unauthenticated": "refuse"}
    code, text = send(smtp, ANONYMOUS, [box.address], "to box")
    assert code == 550 and "not authenticated" in text
    assert send(smtp, ANONYMOUS, [other.address], "to other") == (250, "")  # the customer default: deliver
    assert subjects(other) == ["to other"]
    # One transaction to both: SMTP has one answer, so box's copy is held instead.
    assert send(smtp, ANONYMOUS, [box.address, other.address], "to both") == (250, "")
    assert subjects(other) == ["to both", "to other"] and subjects(box) == []
    assert [(q.inbox_id, q.reason) for q in QuarantinedMessage.select()] == [(box.id, "unauthenticated")]
    # Authenticated mail is never the policy's business.
    assert send(smtp, PROVEN, [box.address], "proven") == (250, "")
    assert subjects(box) == ["proven"]


def test_when_dns_does_not_answer_a_refusal_is_temporary(client, smtp, acme, zone):
    admin(client, acme, "PUT", "/v1/admin/inbound-policy", json={"unauthenticated": "refuse"})
    zone.silent = True
    code, text = send(smtp, PROVEN, [acme.inbox.address])
    assert code == 451 and text.startswith("4.7.0 ")
    assert subjects(acme.inbox) == []
    zone.silent = False
    assert send(smtp, PROVEN, [acme.inbox.address]) == (250, "")  # the sender's retry
    assert subjects(acme.inbox) == ["Pay now"]


# -- the policy API -----------------------------------------------------------------------


def test_policy_levels_inherit_and_refuse_bad_input(client, acme):
    box = acme.inbox
    path = f"/v1/admin/inboxes/{box.id}/inbound-policy"
    first = admin(client, acme, "GET", path).json
    assert (first["dmarc_reject"], first["unauthenticated"]) == (None, None)
    assert first["effective"] == {"dmarc_reject": "quarantine", "unauthenticated": "deliver"}  # [trust]
    admin(client, acme, "PUT", "/v1/admin/inbound-policy", json={"unauthenticated": "quarantine"})
    assert admin(client, acme, "GET", path).json["effective"]["unauthenticated"] == "quarantine"  # the customer's
    admin(client, acme, "PUT", path, json={"unauthenticated": "deliver", "dmarc_reject": "refuse"})
    assert admin(client, acme, "GET", path).json["effective"] == {
        "dmarc_reject": "refuse",
        "unauthenticated": "deliver",
    }
    cleared = admin(client, acme, "PUT", path, json={"unauthenticated": None}).json
    assert (cleared["dmarc_reject"], cleared["unauthenticated"]) == ("refuse", None)
    assert cleared["effective"]["unauthenticated"] == "quarantine"
    bad = admin(client, acme, "PUT", path, json={"dmarc_reject": "bounce"})
    assert (bad.status_code, bad.json["error"]["field"]) == (422, "dmarc_reject")
    assert admin(client, acme, "PUT", path, json={"reject_all": True}).status_code == 422
    malformed = admin(client, acme, "PUT", path, body="{not json", content_type="application/json")
    assert (malformed.status_code, malformed.json["error"]["code"]) == (400, "malformed_json")
    assert agent(client, acme, "PUT", path, json={"dmarc_reject": "deliver"}).status_code == 403  # agents cannot
    globex = make_tenant("globex")
    assert admin(client, globex, "GET", path).status_code == 404
    assert admin(client, globex, "PUT", path, json={"dmarc_reject": "deliver"}).status_code == 404
    assert admin(client, acme, "GET", path).json["dmarc_reject"] == "refuse"  # unchanged by those
    changes = [e.code for e in AuditEvent.select().where(AuditEvent.action == "inbound_policy.set")]
    assert "unauthenticated=inherit" in changes


def test_an_operator_names_the_customer(client, acme):
    from support.world import operator_token

    token = operator_token()
    headers = {"Authorization": f"Bearer {token}"}
    missing = client.simulate_get("/v1/admin/inbound-policy", headers=headers)
    assert (missing.status_code, missing.json["error"]["field"]) == (422, "customer_id")
    resp = client.simulate_put(
        "/v1/admin/inbound-policy", params={"customer_id": "acme"}, headers=headers, json={"dmarc_reject": "deliver"}
    )
    assert resp.json["customer_id"] == acme.customer.id and resp.json["effective"]["dmarc_reject"] == "deliver"


# -- the CLI -----------------------------------------------------------------------------


@pytest.fixture
def run(env, monkeypatch, config):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POSTERN_TRUST_VERIFY", "true")
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(*args):
        result = CliRunner().invoke(cli, list(args), obj={})
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_the_cli_shows_sets_lists_releases_and_discards(run, smtp, acme):
    set_here = json.loads(
        run("admin", "inbound-policy", "--customer", "acme", "--unauthenticated", "quarantine", "--json").stdout
    )
    assert set_here["effective"]["unauthenticated"] == "quarantine"
    assert "unauthenticated: quarantine (set here)" in run("admin", "inbound-policy", "--customer", "acme").stdout
    shown = run("admin", "inbound-policy", "--inbox", acme.inbox.id).stdout
    assert "unauthenticated: quarantine (inherited)" in shown
    send(smtp, ANONYMOUS, [acme.inbox.address], "first")
    send(smtp, ANONYMOUS, [acme.inbox.address], "second")
    rows = json.loads(run("admin", "quarantine", "list", "--inbox", acme.inbox.id, "--json").stdout)
    assert [r["subject"] for r in rows] == ["first", "second"]
    assert "Wire the money today." in run("admin", "quarantine", "show", rows[0]["id"]).stdout
    assert "released" in run("admin", "quarantine", "release", rows[0]["id"]).stdout
    run("admin", "quarantine", "discard", rows[1]["id"])
    assert subjects(acme.inbox) == ["first"] and QuarantinedMessage.select().count() == 0
    gone = CliRunner().invoke(cli, ["admin", "quarantine", "release", rows[1]["id"]], obj={})
    assert gone.exit_code == 1 and "no quarantined message" in gone.stderr


def test_deleting_an_inbox_takes_its_held_mail_and_its_policy(client, postern, acme):
    from support.world import seed_held

    from postern.core.models import InboundPolicy

    box = acme.inbox
    admin(client, acme, "PUT", f"/v1/admin/inboxes/{box.id}/inbound-policy", json={"unauthenticated": "refuse"})
    admin(client, acme, "PUT", "/v1/admin/inbound-policy", json={"dmarc_reject": "refuse"})
    seed_held(postern, box)
    assert agent(client, acme, "DELETE", f"/v1/inboxes/{box.id}").status_code == 204
    assert QuarantinedMessage.select().count() == 0
    assert [p.scope for p in InboundPolicy.select()] == [""]  # the customer's stays


def test_hostile_dns_answers_never_stall_or_stop_the_listener(smtp, acme, zone):
    import time

    zone.add(
        "hostile.example", "TXT", "v=spf1 " + " ".join(f"include:h{n}.hostile.example" for n in range(40)) + " -all"
    )
    zone.add("_dmarc.hostile.example", "TXT", "v=DMARC1; p=" + "r" * 4000)
    started = time.monotonic()
    assert send(smtp, ("x@hostile.example", "x@hostile.example"), [acme.inbox.address], "hostile") == (250, "")
    assert time.monotonic() - started < 5  # [trust] dns_timeout is 1 s here
    assert subjects(acme.inbox) == ["hostile"]
    [stored] = Message.select().where(Message.subject == "hostile")
    verdict = json.loads(stored.authentication)
    assert verdict["spf"] == "permerror" and verdict["verified_sender"] is False
    assert send(smtp, PROVEN, [acme.inbox.address], "after") == (250, "")  # still serving
