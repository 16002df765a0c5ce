"""Parser fuzzing at CI size: MIME ingest, SMTP sessions, DNS packets and JSON bodies,
each against the real part (the oracles are in support/fuzz.py).

``POSTERN_FUZZ_EXAMPLES=100000`` runs every target that long; bench/parser_fuzz.py runs
them and prints inputs tried and crashes per target instead of stopping at the first.
"""

from __future__ import annotations

import json

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fuzz
from support.dns import RunningDns
from support.world import make_tenant
from test_tenancy import objects_of

from postern.api import create_app
from postern.core.mail.ingest import limits_for
from postern.core.models import Message


def fuzz_settings(ci_examples: int):
    # No example database: runs must not depend on what an earlier run found.
    return settings(
        max_examples=fuzz.examples(ci_examples),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def config(tmp_path, env):
    return fuzz.local_config(tmp_path, env)


@pytest.fixture
def inbox(postern):
    return fuzz.agent_inbox(postern)


# -- MIME ------------------------------------------------------------------------------


def test_mime_parse_survives_any_bytes(postern):
    limits = limits_for(postern)

    @fuzz_settings(2000)
    @given(raw=fuzz.mime_input)
    def parse_any(raw):
        fuzz.check_mime(raw, limits)

    parse_any()


def test_mime_ingest_stores_whatever_parses(postern, inbox):
    stored_before = Message.select().count()

    @fuzz_settings(300)
    @given(raw=st.one_of(fuzz.mime_part(), fuzz.mutated_message()))
    def ingest_any(raw):
        fuzz.check_ingest(postern, raw, inbox.address)

    ingest_any()
    assert Message.select().count() > stored_before  # the oracle really stored messages


# -- SMTP ------------------------------------------------------------------------------


@pytest.fixture
def smtp(postern, inbox):
    server = fuzz.RunningSmtp(postern)
    yield server
    server.stop()


def test_smtp_sessions_get_only_protocol_answers(smtp, inbox):
    @fuzz_settings(150)
    @given(commands=fuzz.smtp_session)
    def session(commands):
        fuzz.check_smtp_session(smtp.port, commands)

    session()
    # Still serving, and a plain message is stored after all that.
    before = Message.select().where(Message.inbox == inbox.id).count()
    replies = fuzz.check_smtp_session(
        smtp.port,
        [
            b"EHLO x",
            b"MAIL FROM:<a@example.org>",
            f"RCPT TO:<{inbox.address}>".encode(),
            fuzz.smtp_data(b"Subject: ok\r\n\r\nfine"),
        ],
    )
    assert any(r.startswith(b"250 2.0.0 OK stored as msg_") for r in replies), replies
    assert Message.select().where(Message.inbox == inbox.id).count() == before + 1


# -- DNS -------------------------------------------------------------------------------


@pytest.fixture
def ns(postern):
    make_tenant("acme")
    server = RunningDns(postern)
    yield server
    server.stop()


def test_dns_answers_legal_queries_without_formerr(ns):
    @fuzz_settings(400)
    @given(packet=fuzz.legal_query(), tcp=st.booleans())
    def legal(packet, tcp):
        fuzz.check_dns(ns.host, ns.port, packet, tcp, legal=True)

    legal()


def test_dns_survives_random_and_mutated_packets(ns):
    @fuzz_settings(400)
    @given(packet=fuzz.dns_packet, tcp=st.booleans())
    def hostile(packet, tcp):
        fuzz.check_dns(ns.host, ns.port, packet, tcp, legal=False)

    hostile()
    fuzz.check_dns(ns.host, ns.port, fuzz.plain_query(), tcp=False, legal=True)


# -- JSON bodies -----------------------------------------------------------------------


def write_operations(client) -> list[tuple[str, str, str | None, list[str]]]:
    """(method, path, auth, field names) of every documented operation that reads a body."""
    doc = client.simulate_get("/v1/openapi.json").json
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if "requestBody" in op:
                if "application/json" not in op["requestBody"]["content"]:
                    continue  # a form body (the RFC 8058 one-click unsubscribe): fuzzed as JSON it means nothing
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                if "$ref" in schema:
                    schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
                found.append((method.upper(), path, op.get("x-postern-auth"), sorted(schema.get("properties", {}))))
    return found


def fuzz_bodies(client, method: str, url: str, headers: dict, fields: list[str]) -> int:
    tried = 0

    @fuzz_settings(60)
    @given(body=fuzz.body_for(fields))
    def send(body):
        nonlocal tried
        tried += 1
        # ASCII escapes, as most clients send: a lone surrogate has no UTF-8 form to send raw.
        sent = {**headers, "Content-Type": "application/json"}
        fuzz.check_json_response(client.simulate_request(method, url, headers=sent, body=json.dumps(body)))

    send()
    return tried


def test_json_bodies_never_make_a_5xx(postern):
    client = falcon.testing.TestClient(create_app(postern))
    acme = make_tenant("acme")
    mine, me = objects_of(postern, acme, "fuzzer")
    # Admin calls act on another enrollment's objects, so revoking them keeps ``me`` working.
    admin_side, _ = objects_of(postern, acme, "adminside")
    operations = write_operations(client)
    assert len(operations) >= 8, operations
    tried = 0
    for method, path, auth, fields in operations:
        ids = admin_side if auth == "admin" else mine
        key = acme.admin_token if auth == "admin" else me.agent_key
        headers = {"Authorization": f"Bearer {key}"} if auth else {}
        tried += fuzz_bodies(client, method, fuzz.fill_path(path, ids), headers, fields)
    assert tried >= 8 * fuzz.examples(60) // 2
