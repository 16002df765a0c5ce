"""Header injection through RFC 2047 encoded words, checked on the wire.

A capture relay (aiosmtpd on 127.0.0.1) stands in for the smarthost; every message it
receives is read back with the standard library's most literal parser (compat32, which
splits on any line ending) and with ``email.policy.default`` (which decodes encoded
words, as a reader does). What a sender, an agent or an outside correspondent wrote must
arrive as the text it was, with exactly the header fields Postern composed.
"""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
from collections import Counter
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

import dkim
import falcon.testing
import pytest
from aiosmtpd.controller import Controller
from support.dns import RunningDns
from support.server import free_port, wait_for
from support.sink import relaying_config
from support.world import INFO, make_tenant
from test_dkim import txt_from

from postern.api import create_app
from postern.core.auth import authenticate
from postern.core.backends import OutboundMessage, PermanentFailure
from postern.core.db import DatabaseRunner, GroupCommitter
from postern.core.mail import delivery, headers, outbound
from postern.core.models import Message
from postern.plugins.acs.mapping import email_body
from postern.plugins.acs.options import AcsOptions
from postern.plugins.smtp_local import intake as smtp

EVIL = "=?utf-8?q?hi=0D=0ABcc:_evil@attacker.example?="  # decodes to "hi\r\nBcc: evil@…"
TWICE = "=?utf-8?b?" + base64.b64encode(EVIL.encode()).decode() + "?="  # decodes to EVIL
LITERAL = "=?utf-8?q?caf=C3=A9?="  # text that merely looks like an encoded word
OUTSIDE = "someone@example.org"
BASE = ("from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding")


@pytest.fixture
def config(tmp_path, env, sink):
    return relaying_config(tmp_path, env, sink[1])


@pytest.fixture
def agent(postern):
    client = falcon.testing.TestClient(create_app(postern))
    key = make_tenant("acme").agent_key(handle="alice").agent_key
    auth = {"Authorization": f"Bearer {key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=auth, json={"username": "alice"}).json
    return client, auth, inbox


def send(agent, **body):
    client, auth, inbox = agent
    return client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=auth, json={"text": "hi", **body})


def wire_names(raw: bytes) -> Counter:
    """Header field names as the most literal reader splits them (any line ending)."""
    return Counter(name.lower() for name in BytesHeaderParser(policy=compat32).parsebytes(raw).keys())


def read(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def rfc2047_name(raw: bytes, header: str) -> str:
    """The first display name of ``header`` decoded as RFC 2047 says (whitespace between
    adjacent encoded words dropped; Python 3.11's address parser keeps it)."""
    value = email.message_from_bytes(raw, policy=compat32)[header].replace("\r\n", "")
    phrase = value.rpartition(" <")[0]
    return str(make_header(decode_header(phrase)))


def only_delivery(sink) -> bytes:
    [raw] = sink[0].raw
    return raw


# -- send: every header Postern writes -------------------------------------------------

SUBJECT = lambda m: str(m["Subject"])  # noqa: E731
TICKET = lambda m: str(m["X-Ticket"])  # noqa: E731


def name_in(header):
    return lambda m: m[header].addresses[0].display_name


@pytest.mark.parametrize(
    "body, extra, reader, expected",
    [
        ({"subject": LITERAL}, (), SUBJECT, LITERAL),
        (
            {"subject": f"Re: {LITERAL} and =?x?q?=0D?= {'long ' * 30}"},
            (),
            SUBJECT,
            f"Re: {LITERAL} and =?x?q?=0D?= {'long ' * 30}",
        ),
        ({"to": [{"address": OUTSIDE, "name": LITERAL}]}, (), name_in("To"), LITERAL),
        ({"to": ["b@example.org"], "cc": [{"address": OUTSIDE, "name": LITERAL}]}, ("cc",), name_in("Cc"), LITERAL),
        (
            {"reply_to": [{"address": OUTSIDE, "name": "Ann =?utf-8?q?=3C?="}]},
            ("reply-to",),
            name_in("Reply-To"),
            "Ann =?utf-8?q?=3C?=",
        ),
        ({"headers": {"X-Ticket": LITERAL}}, ("x-ticket",), TICKET, LITERAL),
        ({"headers": {"X-Ticket": f"{LITERAL} {'long ' * 30}"}}, ("x-ticket",), TICKET, f"{LITERAL} {'long ' * 30}"),
    ],
    ids=["subject", "subject-folded", "to-name", "cc-name", "reply-to-name", "x-header", "x-header-folded"],
)
def test_encoded_word_text_arrives_as_the_text_it_was(agent, sink, body, extra, reader, expected):
    resp = send(agent, **{"to": [OUTSIDE], "subject": "s", **body})
    assert resp.status_code == 201 and resp.json["status"] == "sent", resp.text
    raw = only_delivery(sink)
    assert wire_names(raw) == Counter(("dkim-signature", *BASE, *extra))
    assert reader(read(raw)) == expected


@pytest.mark.parametrize(
    "body, field",
    [
        ({"subject": EVIL}, "subject"),
        ({"subject": f"Re: {TWICE}"}, "subject"),  # a reader that decodes once too often
        ({"subject": "a\tb"}, "subject"),
        ({"headers": {"X-Ticket": EVIL}}, "headers"),
        ({"headers": {"X-Ticket": TWICE}}, "headers"),
        ({"to": [{"address": OUTSIDE, "name": EVIL}]}, "to"),  # was a 500
        ({"cc": [{"address": OUTSIDE, "name": "=?utf-8?b?QQpC?="}]}, "cc"),
        ({"reply_to": [{"address": OUTSIDE, "name": "=?iso-8859-1?q?A=85B?="}]}, "reply_to"),
        ({"bcc": [{"address": OUTSIDE, "name": "=?utf-8?q?A=E2=80=A8B?="}]}, "bcc"),
    ],
    ids=["subject", "subject-twice", "subject-tab", "x-header", "x-header-twice", "to", "cc", "reply-to", "bcc"],
)
def test_a_hidden_line_break_is_a_422_naming_the_field_and_nothing_leaves(agent, sink, body, field):
    resp = send(agent, **{"to": [OUTSIDE], "subject": "s", **body})
    assert resp.status_code == 422, resp.text
    assert resp.json["error"]["field"] == field
    assert sink[0].received == [] and Message.select().count() == 0


def test_an_inbox_display_name_hiding_a_line_break_is_a_422(agent, sink):
    client, auth, _ = agent
    resp = client.simulate_post("/v1/inboxes", headers=auth, json={"username": "bob", "display_name": EVIL})
    assert resp.status_code == 422 and resp.json["error"]["field"] == "display_name"


def test_an_inbox_display_name_is_sent_as_text(agent, sink):
    client, auth, _ = agent
    inbox = client.simulate_post("/v1/inboxes", headers=auth, json={"username": "bob", "display_name": LITERAL}).json
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages", headers=auth, json={"to": [OUTSIDE], "subject": "s", "text": "t"}
    )
    assert resp.status_code == 201, resp.text
    raw = only_delivery(sink)
    assert wire_names(raw) == Counter(("dkim-signature", *BASE))
    assert read(raw)["From"].addresses[0].display_name == LITERAL


# -- inbound text, and the reply an agent makes to it -----------------------------------


@pytest.fixture
def smtp_in(postern):
    """Postern's own SMTP handler on a real socket: mail from outside, no key at all."""
    runner, committer = DatabaseRunner(1), GroupCommitter()
    handler = smtp.make_handler(postern, runner, committer)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port
    controller.stop()
    committer.shutdown()
    runner.shutdown()


@pytest.fixture
def ns(postern):
    server = RunningDns(postern)
    yield server
    server.stop()


def mail_in(port: int, inbox: dict, head: str) -> Message:
    raw = f"{head}\r\nTo: {inbox['address']}\r\nMessage-ID: <attack@attacker.example>\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail("mallory@attacker.example", [inbox["address"]], raw.encode())
    return wait_for(lambda: Message.get_or_none(Message.direction == "inbound"), timeout=60)


def test_a_reply_to_a_subject_encoded_twice_carries_no_injected_header(agent, sink, smtp_in, ns):
    client, auth, inbox = agent
    stored = mail_in(smtp_in, inbox, f"From: {TWICE} <mallory@attacker.example>\r\nSubject: {TWICE}")
    assert stored.subject == EVIL and stored.from_name == EVIL  # decoded once: the text the sender chose
    reply = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{stored.id}/reply", headers=auth, json={"text": "noted"}
    )
    assert reply.status_code == 201 and reply.json["status"] == "sent", reply.text
    raw = only_delivery(sink)
    assert wire_names(raw) == Counter(("dkim-signature", *BASE, "in-reply-to", "references"))
    message = read(raw)
    assert str(message["Subject"]) == f"Re: {EVIL}" and rfc2047_name(raw, "To") == EVIL
    assert message["To"].addresses[0].addr_spec == "mallory@attacker.example"
    dnsfunc, _ = txt_from(ns)
    assert dkim.verify(raw, dnsfunc=dnsfunc) is True
    assert raw.endswith(bytes(Message.get_by_id(reply.json["id"]).raw))  # signed as composed, nothing added


@pytest.mark.parametrize(
    "subject, name",
    [
        ("=?utf-8?q?hi=0D=0ABcc:_evil@attacker.example?=", "=?utf-8?q?Ann=0BX?="),
        ("=?utf-8?q?a=09b=0Cc=C2=85d=E2=80=A8e?=", "=?utf-8?b?QW5uCVg=?="),
        ("plain", "=?utf-8?q?Ann=0D=0AX_=3Cmallory@attacker.example=3E,?="),  # the sender was lost
    ],
    ids=["crlf-and-vt", "tab-ff-nel-lsep", "crlf-in-a-name"],
)
def test_inbound_line_breaks_are_neutralised_and_replies_stay_clean(agent, sink, smtp_in, subject, name):
    client, auth, inbox = agent
    head = f"From: {name} <ann@example.org>\r\nSubject: {subject}"
    stored = mail_in(smtp_in, inbox, head)
    assert not headers.CONTROL.search(stored.subject) and not headers.CONTROL.search(stored.from_name)
    assert head.encode() in bytes(stored.raw)  # the raw bytes keep what came
    assert stored.from_address == "ann@example.org"  # the encoded specials did not move it
    detail = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{stored.id}", headers=auth).json
    assert not headers.CONTROL.search(detail["subject"] + detail["from"]["name"])
    reply = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{stored.id}/reply", headers=auth, json={"text": "noted"}
    )
    assert reply.status_code == 201, reply.text
    raw = only_delivery(sink)
    assert wire_names(raw) == Counter(("dkim-signature", *BASE, "in-reply-to", "references"))
    assert str(read(raw)["Subject"]) == f"Re: {stored.subject}"


def test_a_reply_copies_a_stored_control_character_nowhere(agent, sink, smtp_in):
    """A row stored before ingest neutralised text: the reply neutralises it again."""
    client, auth, inbox = agent
    stored = mail_in(smtp_in, inbox, "From: Ann <ann@example.org>\r\nSubject: old")
    Message.update(subject="old\r\nBcc: evil@attacker.example", from_name="Ann\x0bX").where(
        Message.id == stored.id
    ).execute()
    reply = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{stored.id}/reply", headers=auth, json={"text": "k"}
    )
    assert reply.status_code == 201, reply.text
    raw = only_delivery(sink)
    assert "bcc" not in wire_names(raw) and str(read(raw)["Subject"]) == "Re: old  Bcc: evil@attacker.example"
    assert read(raw)["To"].addresses[0].display_name == "Ann X"


# -- the wire guard ----------------------------------------------------------------------


def queued(postern, agent, **body) -> Message:
    """A message stored for sending but not yet attempted (as the outbox would find it)."""
    _, auth, inbox = agent
    principal = authenticate(auth["Authorization"].split()[1], "agent", INFO)
    body = {"to": [OUTSIDE], "subject": "s", "text": "hi", **body}
    message, _ = outbound.send(postern, principal, INFO, inbox["id"], body, attempt_now=False)
    return message


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.replace(b"Subject: s\r\n", b"Subject: hi\r\nBcc: evil@attacker.example\r\n"),
        lambda raw: raw.replace(b"Subject: s\r\n", b"Subject: hi\nBcc: evil@attacker.example\r\n"),
        lambda raw: raw.replace(b"Subject: s\r\n", f"Subject: {EVIL}\r\n".encode()),
        lambda raw: raw.replace(b"Subject: s\r\n", b""),
    ],
    ids=["extra-line", "bare-lf", "encoded-crlf", "missing"],
)
def test_a_stored_message_whose_headers_were_not_composed_never_leaves(postern, agent, sink, tamper):
    """What an older Postern queued with an injected line fails for good instead."""
    message = queued(postern, agent)
    tampered = tamper(bytes(message.raw))
    assert tampered != bytes(message.raw)
    Message.update(raw=tampered).where(Message.id == message.id).execute()
    after = delivery.deliver(postern, message.id)
    assert after.status == "failed" and after.error.startswith("header_mismatch:")
    assert sink[0].received == []


def test_the_untampered_queued_message_is_sent(postern, agent, sink):
    message = queued(postern, agent, subject=LITERAL, headers={"X-Ticket": "7"})
    assert delivery.deliver(postern, message.id).status == "sent"
    assert str(read(only_delivery(sink))["Subject"]) == LITERAL


def test_a_tab_queued_by_an_older_version_breaks_no_line_and_is_sent(postern, agent, sink):
    message = queued(postern, agent)
    Message.update(raw=bytes(message.raw).replace(b"Subject: s\r\n", b"Subject: a\tb\r\n")).where(
        Message.id == message.id
    ).execute()
    assert delivery.deliver(postern, message.id).status == "sent"
    assert str(read(only_delivery(sink))["Subject"]) == "a\tb"


def test_a_composer_fault_fails_closed(agent, sink, monkeypatch):
    """Were a value ever written with a line break, the send is refused, not made."""
    monkeypatch.setattr(headers, "unstructured", lambda name, value: "hi\r\nBcc: evil@attacker.example")
    resp = send(agent, to=[OUTSIDE], subject="s")
    assert resp.status_code == 500 and resp.json["error"]["code"] == "header_mismatch"
    assert sink[0].received == [] and Message.select().count() == 0


def test_a_content_id_cannot_smuggle_a_line_into_a_part(agent, sink):
    attachment = {"content": "eA==", "filename": EVIL, "content_id": EVIL}
    assert send(agent, to=[OUTSIDE], attachments=[attachment]).json["error"]["field"] == "attachments"
    attachment.pop("content_id")
    assert send(agent, to=[OUTSIDE], attachments=[attachment]).status_code == 201  # the filename is sanitised
    raw = only_delivery(sink)
    for part in email.message_from_bytes(raw, policy=compat32).walk():
        assert "Bcc" not in part.keys()


# -- ACS writes the headers itself: unsafe text is refused, never handed over -----------


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": f"Re: {EVIL}"},
        {"headers": {"X-Ticket": TWICE}},
        {"names": {OUTSIDE: "A\u2028B"}},
    ],
    ids=["subject", "header", "name"],
)
def test_acs_refuses_text_hiding_a_line_break(fields):
    message = OutboundMessage(message_id="<m@x>", sender="a@acme.example", recipients=(OUTSIDE,), raw=b"", **fields)
    with pytest.raises(PermanentFailure) as refused:
        email_body(message, AcsOptions(endpoint="https://x.example", access_key="a2V5"))
    assert refused.value.code == "unsafe_header"
    fine = OutboundMessage(message_id="<m@x>", sender="a@acme.example", recipients=(OUTSIDE,), raw=b"", subject="ok")
    assert email_body(fine, AcsOptions(endpoint="https://x.example", access_key="a2V5"))["content"]["subject"] == "ok"
