"""Regressions for what the fuzzers found (tests/test_parser_fuzz.py,
tests/test_contract_fuzz.py), each pinned with the input that found it. Run on
SQLite and PostgreSQL: several only failed on PostgreSQL."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

import dns.message
import dns.rcode
import falcon.testing
import pytest
from support import fuzz
from support.dns import RunningDns
from support.world import make_tenant
from test_tenancy import objects_of

from postern.api import Route, check_audit_actions, create_app
from postern.core.ids import new_id
from postern.core.models import Attachment, AuditEvent, Message
from postern.core.smtp import session as smtp_session_module
from postern.plugins.smtp_local import intake as smtp


@pytest.fixture
def config(tmp_path, env):
    return fuzz.local_config(tmp_path, env)


@pytest.fixture
def inbox(postern):
    return fuzz.agent_inbox(postern)


@pytest.fixture
def smtp_server(postern, inbox):
    server = fuzz.RunningSmtp(postern)
    yield server
    server.stop()


def session(port: int, *commands: bytes) -> list[bytes]:
    return fuzz.check_smtp_session(port, [b"EHLO fuzz", b"MAIL FROM:<a@example.org>", *commands])


# -- audit actions longer than the column -----------------------------------------------


def test_a_refusal_on_the_longest_route_is_audited_not_a_500(postern):
    """On PostgreSQL the refusal's audit action, the route's full template (82 characters),
    overflowed ``audit_event.action`` (60) and the 404 became a 500. The core audits a
    foreign inbox itself; a missing attachment on one's own message is audited by the API
    under the route's action."""
    client = falcon.testing.TestClient(create_app(postern))
    mine, me = objects_of(postern, make_tenant("acme"), "owner")
    missing = new_id("att")
    path = f"/v1/inboxes/{mine['inbox']}/messages/{mine['message']}/attachments/{missing}/link"
    resp = client.simulate_post(path, headers={"Authorization": f"Bearer {me.agent_key}"})
    assert resp.status_code == 404, resp.text
    row = AuditEvent.select().where(AuditEvent.request_id == resp.headers["x-request-id"]).get()
    assert row.action == "POST /v1/inboxes/{}/messages/{}/attachments/{}/link"
    assert (row.outcome, row.code, row.target) == ("denied", "not_found", mine["inbox"])


def test_a_route_whose_audit_action_cannot_fit_fails_at_start_up():
    class Deep:
        async def on_get(self, req, resp, **ids):
            resp.media = {}

    path = "/v1/plugins/{plugin_id}/collections/{collection_id}/items/{item_id}/download-links/current"
    with pytest.raises(ValueError, match="audit action"):
        check_audit_actions(Route(path, Deep()))
    check_audit_actions(Route("/v1/plugin/{thing_id}", Deep()))  # a normal one passes


# -- SMTP RCPT with NUL or bytes that are not UTF-8 -------------------------------------


@pytest.mark.parametrize("address", [b"box\x00@acme.agents.localhost", b"box\xff@acme.agents.localhost", b"\xc3("])
def test_an_rcpt_address_postgresql_cannot_hold_answers_553(smtp_server, inbox, address):
    """PostgreSQL refuses NUL and undecodable text; the lookup raised and aiosmtpd
    answered ``500 Error: (ValueError …)`` (SQLite just found nothing)."""
    replies = session(smtp_server.port, b"RCPT TO:<" + address + b">")
    assert any(r.startswith(b"553 5.1.3") for r in replies), replies
    # The session goes on: a good recipient in the same transaction is accepted.
    replies = session(smtp_server.port, b"RCPT TO:<" + address + b">", f"RCPT TO:<{inbox.address}>".encode())
    assert any(r.startswith(b"553 5.1.3") for r in replies), replies
    assert any(r.startswith(b"250 2.1.5") for r in replies), replies


@pytest.mark.parametrize(
    "command",
    [b"MAIL FROM:<", b"MAIL FROM:<@", b"RCPT TO:<", b"RCPT TO:<@", b'MAIL FROM:"', b'MAIL FROM:<"', b'RCPT TO:()"'],
)
def test_an_address_the_standard_library_trips_on_is_malformed_not_a_500(smtp_server, command):
    """get_angle_addr raises IndexError on "<" and "<@"; aiosmtpd let it escape and
    answered "500 Error: (IndexError) …" with a logged traceback, once per command."""
    setup = [b"EHLO fuzz"] if command.startswith(b"MAIL") else [b"EHLO fuzz", b"MAIL FROM:<a@example.org>"]
    replies = fuzz.check_smtp_session(smtp_server.port, [*setup, command])  # raises on "500 Error: ("
    assert any(r.startswith(b"553 5.1.3") for r in replies), replies


@pytest.mark.parametrize("sender", [b"\xeb\x82@example.org", b"a\x00b@example.org"])
def test_a_sender_address_with_bytes_a_database_cannot_hold_is_stored(smtp_server, inbox, sender):
    """MAIL FROM that is not UTF-8 reached the database as surrogates: UnicodeEncodeError
    on SQLite and PostgreSQL alike, a 451 and a sender retrying forever."""
    replies = fuzz.check_smtp_session(
        smtp_server.port,
        [
            b"EHLO fuzz",
            b"MAIL FROM:<" + sender + b">",
            f"RCPT TO:<{inbox.address}>".encode(),
            fuzz.smtp_data(b"Subject: s\r\n\r\nx"),
        ],
    )
    assert any(r.startswith(b"250 2.0.0 OK stored as msg_") for r in replies), replies
    stored = Message.get(Message.inbox == inbox.id).envelope_from
    assert stored.endswith("@example.org") and "\x00" not in stored and stored.isprintable()


# -- a poison message: undecodable RFC 2231 parameters ----------------------------------

POISON = (
    b"From: a@example.org\r\nTo: box@acme.agents.localhost\r\nSubject: poison\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody text\r\n'
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*0*=iso-2022-jp''r%1b;"
    b" filename*1=eport.pdf\r\n\r\n%PDF\r\n--b--\r\n"
)


def test_an_undecodable_rfc2231_filename_is_stored_not_retried_forever(smtp_server, inbox):
    """The parameter's charset could not decode its bytes: every look at the header
    raised, ingest failed and the listener answered 451 to each retry, forever."""
    data = fuzz.smtp_data(POISON.removesuffix(b"\r\n"))  # the CRLF before "." is the message's
    replies = session(smtp_server.port, f"RCPT TO:<{inbox.address}>".encode(), data)
    assert any(r.startswith(b"250 2.0.0 OK stored as msg_") for r in replies), replies
    message = Message.get(Message.inbox == inbox.id)
    assert message.text.strip() == "body text" and bytes(message.raw) == POISON
    [attachment] = Attachment.select().where(Attachment.message == message.id)
    assert (attachment.filename, bytes(attachment.data)) == ("r_eport.pdf", b"%PDF")


def test_a_message_that_cannot_be_parsed_is_refused_for_good(postern, inbox, monkeypatch):
    """Parsing depends only on the bytes, so a parser failure is permanent: 554, not the
    451 that asks the sender to send the same bytes again. (Any crash left in the
    parser stands in here for the one above.)"""
    from postern.core.db import DatabaseRunner, GroupCommitter

    def parser_bug(raw, limits):
        raise TypeError("a bug in the parser")

    monkeypatch.setattr(smtp_session_module, "parse", parser_bug)
    runner, committer = DatabaseRunner(1), GroupCommitter()
    try:
        handler = smtp.make_handler(postern, runner, committer)
        envelope = SimpleNamespace(
            rcpt_tos=[inbox.address], mail_from="a@example.org", content=POISON, original_content=POISON
        )
        answer = asyncio.run(handler.handle_DATA(None, None, envelope))
    finally:
        committer.shutdown()
        runner.shutdown()
    assert answer.startswith("554 5.6.0"), answer
    assert Message.select().count() == 0


# -- DNS: legal queries that dnslib refused ---------------------------------------------


@pytest.fixture
def ns(postern):
    make_tenant("acme")
    server = RunningDns(postern)
    yield server
    server.stop()


def query(labels: list[bytes], additional: bytes = b"", count: int = 0, qtype: int = 15) -> bytes:
    head = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, count)
    return head + fuzz._name(labels) + struct.pack(">HH", qtype, 1) + additional


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_label_that_is_not_utf8_gets_an_answer(ns, tcp):
    """RFC 2181 §11: a label is any octets. dnslib refused to decode one (FORMERR), and
    past that, a wildcard answer could not be owned by it (FORMERR again)."""
    packet = query([b"\x80\xff", *fuzz.ZONE_LABELS])
    reply = dns.message.from_wire(fuzz._exchange(ns.host, ns.port, packet, tcp))
    assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    assert reply.question[0].name.labels[0] == b"\x80\xff"
    for rrset in reply.answer:  # a wildcard's synthesised records are owned by the name asked
        assert rrset.name.labels[0] == b"\x80\xff"


def test_an_unknown_record_with_empty_rdata_in_the_additional_section_is_ignored(ns):
    """RFC 3597: a record of an unknown type may have empty RDATA. dnslib's 'Empty RR'
    made the whole query FORMERR, OPT beside it or not."""
    unknown = b"\x00" + struct.pack(">HHIH", 65280, 1, 0, 0)
    opt = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)
    for additional, count in ((unknown, 1), (unknown + opt, 2), (opt + unknown, 2)):
        packet = query(fuzz.ZONE_LABELS, additional, count)
        reply = dns.message.from_wire(fuzz._exchange(ns.host, ns.port, packet, False))
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply
        assert (reply.edns == 0) == (count == 2)  # the OPT was read, wherever it stood


# -- query parameters: empty, unknown, repeated -----------------------------------------


@pytest.mark.parametrize(
    "query_string, field",
    [("limit=", "limit"), ("limt=5", "limt"), ("limit=5&limit=6", "limit"), ("page_token=", "page_token")],
)
def test_query_parameters_falcon_would_drop_are_refused_by_name(postern, inbox, query_string, field):
    client = falcon.testing.TestClient(create_app(postern))
    key = make_tenant("globex").agent_key().agent_key
    resp = client.simulate_get("/v1/inboxes", query_string=query_string, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 422, resp.text
    error = resp.json["error"]
    assert (error["code"], error["field"]) == ("invalid_field", field)
    assert f"'{field}'" in error["message"]
    ok = client.simulate_get("/v1/inboxes", query_string="limit=5", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text
