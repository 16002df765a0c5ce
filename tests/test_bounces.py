"""Per-recipient outcomes, bounces and complaints, end to end: a real smarthost that
refuses one recipient, and bounce and complaint reports sent over real SMTP to
Postern's own listener (the VERP address, or the inbox's address)."""

from __future__ import annotations

import json
import smtplib

import falcon.testing
import pytest
from aiosmtpd.controller import Controller
from support.fuzz import RunningSmtp
from support.server import free_port
from support.sink import Sink
from support.world import make_tenant

from postern.api import create_app
from postern.client.models import Message as SdkMessage
from postern.core.models import Message, MessageRecipient, Suppression, WebhookDelivery
from postern.core.runtime import build_postern
from postern.mcp import shape


class PickySink(Sink):
    """A smarthost that refuses some recipients at RCPT, by address."""

    def __init__(self, refuse: dict[str, str]):
        super().__init__()
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def relay():
    handler = PickySink(
        {
            "gone@example.org": "550 5.1.1 no such user",
            "blocked@example.org": "550 5.7.1 message refused as spam",
            "later@example.org": "451 4.7.1 greylisted, try later",
        }
    )
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def app(config, db, relay):
    _, port = relay
    config.roles["send"].options = {"smtp_local": {"smarthost": f"127.0.0.1:{port}", "starttls": False}}
    postern = build_postern(config)
    acme = make_tenant("acme")
    agent = acme.agent_key(handle="bot", max_mailboxes=5)
    client = falcon.testing.TestClient(create_app(postern))
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "alice"}).json
    hook = {"url": "https://hooks.example.org/in", "event_types": ["message.bounced", "message.complained"]}
    assert client.simulate_post("/v1/webhooks", headers=headers, json=hook).status_code == 201
    return postern, client, headers, inbox, acme


def send(client, headers, inbox, *to, subject="hello"):
    body = {"to": list(to), "subject": subject, "text": "hi"}
    return client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json=body)


def statuses(message_json) -> dict[str, str]:
    return {r["address"]: r["status"] for r in message_json["recipients"]}


def events(kind: str) -> list[dict]:
    return [json.loads(d.payload) for d in WebhookDelivery.select().where(WebhookDelivery.event_type == kind)]


def suppressed(customer_id) -> dict[str, str]:
    return {s.address: s.reason for s in Suppression.select().where(Suppression.customer == customer_id)}


def test_a_relay_refusing_one_recipient_bounces_that_one_only(app, relay):
    postern, client, headers, inbox, acme = app
    sink, _ = relay
    resp = send(client, headers, inbox, "ok@example.org", "gone@example.org", "blocked@example.org")
    assert resp.status_code == 201, resp.text
    assert resp.json["status"] == "sent"
    assert statuses(resp.json) == {
        "ok@example.org": "sent",
        "gone@example.org": "bounced",
        "blocked@example.org": "bounced",
    }
    [delivery] = sink.received
    assert delivery.rcpt_tos == ["ok@example.org"]
    seen_by_sdk = SdkMessage.from_json(resp.json).recipients  # the SDK reads the same
    assert [(r.address, r.status, r.code) for r in seen_by_sdk][:2] == [
        ("blocked@example.org", "bounced", "550 5.7.1"),
        ("gone@example.org", "bounced", "550 5.1.1"),
    ]
    told_the_model = shape.sent(SdkMessage.from_json(resp.json))["recipients_not_sent"]  # MCP's send_email
    assert sorted(r["address"] for r in told_the_model) == ["blocked@example.org", "gone@example.org"]
    detail = shape.message_detail(SdkMessage.from_json(resp.json), include_html=False, links={}, nonce="n")
    assert {r["address"]: r["status"] for r in detail["recipients"]}["gone@example.org"] == "bounced"
    # 5.1.1 says the address is bad: suppressed. 5.7.1 refuses the sender's mail, not the address.
    assert suppressed(acme.customer.id) == {"gone@example.org": "bounce"}
    [event] = events("message.bounced")
    assert event["data"]["id"] == resp.json["id"] and event["data"]["source"] == "delivery"
    assert sorted(r["address"] for r in event["data"]["recipients"]) == ["blocked@example.org", "gone@example.org"]


def test_a_suppressed_address_is_never_sent_to(app, relay):
    postern, client, headers, inbox, acme = app
    sink, _ = relay
    send(client, headers, inbox, "gone@example.org")
    assert suppressed(acme.customer.id) == {"gone@example.org": "bounce"}
    alone = send(client, headers, inbox, "Gone@Example.org")
    assert alone.status_code == 422 and alone.json["error"]["code"] == "recipients_suppressed", alone.text
    mixed = send(client, headers, inbox, "ok@example.org", "gone@example.org")
    assert mixed.status_code == 201
    assert statuses(mixed.json) == {"ok@example.org": "sent", "gone@example.org": "suppressed"}
    assert [d.rcpt_tos for d in sink.received] == [["ok@example.org"]]
    assert Message.select().where(Message.direction == "outbound").count() == 2  # the refused send stored nothing


def test_every_recipient_refused_fails_the_message(app, relay):
    _, client, headers, inbox, _ = app
    resp = send(client, headers, inbox, "gone@example.org")
    assert resp.json["status"] == "failed"
    assert resp.json["error"] == "550 5.1.1: every recipient was refused: 550 5.1.1 no such user"
    assert statuses(resp.json) == {"gone@example.org": "bounced"}


def test_a_deferred_recipient_is_retried_alone(app, relay):
    _, client, headers, inbox, _ = app
    sink, _ = relay
    resp = send(client, headers, inbox, "ok@example.org", "later@example.org")
    assert resp.status_code == 201 and resp.json["status"] == "queued", resp.text
    assert resp.json["error"] == "deferred for later@example.org: 451 4.7.1 greylisted, try later"
    assert statuses(resp.json) == {"ok@example.org": "sent", "later@example.org": "deferred"}
    sink.refuse.pop("later@example.org")  # the greylisting lets it through now
    from postern.core.mail.delivery import deliver

    message = deliver(app[0], resp.json["id"])
    assert message.status == "sent"
    assert [d.rcpt_tos for d in sink.received] == [["ok@example.org"], ["later@example.org"]]  # never twice
    rows = {r.address: (r.status, r.attempts) for r in MessageRecipient.select()}
    assert rows == {"ok@example.org": ("sent", 1), "later@example.org": ("sent", 2)}


# Reports sent back to Postern's listener.


def _report(to: str, subject: str, report_type: str, machine_type: str, machine: str, headers: str) -> bytes:
    """A multipart/report as a mail server writes it: words, the machine-readable part,
    and the original's headers."""
    text = (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.org.\r\n"
        f"--B\r\nContent-Type: {machine_type}\r\n\r\n{machine}\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n--B--\r\n"
    )
    return text.encode()


def dsn(original: Message, recipient: str, status: str, action: str = "failed") -> bytes:
    machine = (
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} mailbox unavailable\r\n"
    )
    headers = f"From: {original.from_address}\r\nTo: {recipient}\r\nMessage-ID: {original.message_id_header}\r\n"
    return _report(
        original.envelope_from, "Undelivered Mail", "delivery-status", "message/delivery-status", machine, headers
    )


def arf(original: Message, recipient: str) -> bytes:
    machine = (
        f"Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n"
    )
    headers = f"From: {original.from_address}\r\nTo: {recipient}\r\nMessage-ID: {original.message_id_header}\r\n"
    return _report(
        original.from_address, "abuse report", "feedback-report", "message/feedback-report", machine, headers
    )


@pytest.fixture
def listener(app):
    running = RunningSmtp(app[0])
    yield running
    running.stop()


def smtp(listener, mail_from: str, rcpt: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", listener.port, timeout=10) as client:
        client.ehlo("mx.example.org")
        client.mail(mail_from)
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        return client.data(raw)


def inbound_count() -> int:
    return Message.select().where(Message.direction == "inbound").count()


def test_a_bounce_report_to_the_verp_address_marks_the_recipient(app, listener, relay):
    postern, client, headers, inbox, acme = app
    sink, _ = relay
    sent = send(client, headers, inbox, "x@example.org", "y@example.org").json
    [delivery] = sink.received
    verp = delivery.mail_from
    assert verp == f"bounce-{sent['id']}@acme.agents.localhost"
    original = Message.get_by_id(sent["id"])
    code, text = smtp(listener, "", verp, dsn(original, "x@example.org", "5.1.1"))
    assert code == 250, text
    got = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}", headers=headers).json
    assert statuses(got) == {"x@example.org": "bounced", "y@example.org": "sent"}
    assert got["status"] == "sent"  # y got it
    assert suppressed(acme.customer.id) == {"x@example.org": "bounce"}
    [event] = events("message.bounced")
    assert event["data"]["source"] == "report" and event["data"]["recipients"][0]["code"] == "5.1.1"
    assert inbound_count() == 0  # never shown to the agent as mail


def test_a_delay_report_changes_nothing(app, listener, relay):
    _, client, headers, inbox, acme = app
    sent = send(client, headers, inbox, "x@example.org").json
    verp = relay[0].received[0].mail_from
    code, _ = smtp(listener, "", verp, dsn(Message.get_by_id(sent["id"]), "x@example.org", "4.4.1", "delayed"))
    assert code == 250
    assert MessageRecipient.get().status == "sent" and suppressed(acme.customer.id) == {}
    assert inbound_count() == 0


def test_a_report_naming_someone_else_changes_nothing(app, listener, relay):
    _, client, headers, inbox, acme = app
    sent = send(client, headers, inbox, "x@example.org").json
    verp = relay[0].received[0].mail_from
    code, _ = smtp(listener, "", verp, dsn(Message.get_by_id(sent["id"]), "stranger@example.org", "5.1.1"))
    assert code == 250
    assert MessageRecipient.get().status == "sent" and suppressed(acme.customer.id) == {}
    assert events("message.bounced") == []


def test_a_complaint_sent_to_the_inbox_is_matched_by_message_id(app, listener):
    _, client, headers, inbox, acme = app
    sent = send(client, headers, inbox, "x@example.org").json
    code, text = smtp(
        listener, "fbl@provider.example", inbox["address"], arf(Message.get_by_id(sent["id"]), "x@example.org")
    )
    assert code == 250, text
    assert MessageRecipient.get().status == "complained"
    # Anyone who saw the Message-ID can send this: it marks and tells, but suppresses no one.
    assert suppressed(acme.customer.id) == {}
    [event] = events("message.complained")
    assert event["data"]["recipients"] == [{"address": "x@example.org", "code": "arf:abuse", "detail": None}]
    assert inbound_count() == 0


def test_a_report_about_mail_postern_never_sent_is_ordinary_mail(app, listener):
    _, client, headers, inbox, acme = app
    stranger = Message(
        from_address=inbox["address"], envelope_from=inbox["address"], message_id_header="<elsewhere@example.net>"
    )
    code, _ = smtp(listener, "", inbox["address"], dsn(stranger, "x@example.org", "5.1.1"))
    assert code == 250
    assert inbound_count() == 1 and suppressed(acme.customer.id) == {}


def test_bounce_addresses_are_accepted_only_for_real_messages(app, listener, relay):
    _, client, headers, inbox, _ = app
    sent = send(client, headers, inbox, "x@example.org").json
    made_up = "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa@acme.agents.localhost"
    assert smtp(listener, "", made_up, b"Subject: x\r\n\r\nx\r\n")[0] == 550
    wrong_domain = f"bounce-{sent['id']}@other.agents.localhost"
    assert smtp(listener, "", wrong_domain, b"Subject: x\r\n\r\nx\r\n")[0] == 550
    # An auto-reply to the bounce address is taken and dropped: not a report, not mail.
    verp = relay[0].received[0].mail_from
    code, _ = smtp(listener, "x@example.org", verp, b"Subject: Out of office\r\n\r\nI am away.\r\n")
    assert code == 250 and inbound_count() == 0
    assert MessageRecipient.get().status == "sent"


def test_a_replayed_bounce_report_fires_once(app, listener, relay):
    _, client, headers, inbox, _ = app
    sent = send(client, headers, inbox, "x@example.org").json
    verp = relay[0].received[0].mail_from
    report = dsn(Message.get_by_id(sent["id"]), "x@example.org", "5.1.1")
    assert smtp(listener, "", verp, report)[0] == 250
    assert smtp(listener, "", verp, report)[0] == 250
    assert len(events("message.bounced")) == 1


def test_a_suppressed_inbox_here_gets_no_copy(app):
    postern, client, headers, inbox, acme = app
    bob = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "bob"}).json
    carol = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "carol"}).json
    from postern.core import suppression

    suppression.suppress(acme.customer.id, bob["address"], "manual")
    for to in ([bob["address"], carol["address"]], [bob["address"], carol["address"], "ok@example.org"]):
        resp = send(client, headers, inbox, *to)
        assert resp.status_code == 201 and statuses(resp.json)[bob["address"]] == "suppressed", resp.text
    got = lambda box: Message.select().where((Message.inbox == box["id"]) & (Message.direction == "inbound")).count()  # noqa: E731
    assert got(bob) == 0 and got(carol) == 2


def test_a_complaint_to_the_verp_address_suppresses(app, listener, relay):
    _, client, headers, inbox, acme = app
    sent = send(client, headers, inbox, "x@example.org").json
    verp = relay[0].received[0].mail_from
    code, _ = smtp(listener, "fbl@provider.example", verp, arf(Message.get_by_id(sent["id"]), "x@example.org"))
    assert code == 250
    assert MessageRecipient.get().status == "complained"
    assert suppressed(acme.customer.id) == {"x@example.org": "complaint"}


def test_a_bounce_sent_to_the_inbox_marks_but_does_not_suppress(app, listener):
    _, client, headers, inbox, acme = app
    sent = send(client, headers, inbox, "x@example.org").json
    code, _ = smtp(listener, "", inbox["address"], dsn(Message.get_by_id(sent["id"]), "x@example.org", "5.1.1"))
    assert code == 250 and inbound_count() == 0
    assert MessageRecipient.get().status == "bounced" and suppressed(acme.customer.id) == {}
    [event] = events("message.bounced")
    assert event["data"]["source"] == "report"
