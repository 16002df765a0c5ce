"""Sender verdicts at receive (postern/core/mail/verdicts.py): real mail signed with
dkimpy, keys and policies served by a real DNS server on 127.0.0.1 (support.zone_dns),
and end to end over real SMTP into ``postern serve``."""

from __future__ import annotations

import base64
import json
import smtplib
import time

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from support.server import seeding
from support.world import make_tenant
from support.zone_dns import ZoneDns

from postern.client import Message
from postern.core.mail import verdicts
from postern.mcp import shape

CLIENT_IP = "192.0.2.10"
HELO = "mx.sender.example"


def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def ed25519_key():
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa_key(), "other": rsa_key(), "ed": ed25519_key()}


@pytest.fixture
def zone(keys):
    server = ZoneDns(
        {
            ("s1._domainkey.sender.example", "TXT"): [keys["rsa"][1]],
            ("ed._domainkey.sender.example", "TXT"): [keys["ed"][1]],
            ("s2._domainkey.relay.example", "TXT"): [keys["other"][1]],
            ("sender.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
            ("soft.example", "TXT"): ["v=spf1 ip4:198.51.100.1 ~all"],
            ("_dmarc.sender.example", "TXT"): ["v=DMARC1; p=reject"],
            ("_dmarc.victim.example", "TXT"): ["v=DMARC1; p=reject"],
            # Eleven includes: one past RFC 7208 4.6.4's limit of ten lookups.
            ("loops.example", "TXT"): ["v=spf1 " + " ".join(f"include:i{n}.loops.example" for n in range(11))],
            **{(f"i{n}.loops.example", "TXT"): ["v=spf1 ?all"] for n in range(11)},
        }
    )
    yield server
    server.close()


def message(from_addr="Alice <alice@sender.example>", body="Hello there.\r\n", extra=""):
    return (
        f"From: {from_addr}\r\nTo: box@acme.agents.localhost\r\nSubject: Verdicts\r\n"
        f"Message-ID: <v1@sender.example>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n{extra}\r\n{body}"
    ).encode()


def sign(raw, key, selector=b"s1", domain=b"sender.example", algorithm=b"rsa-sha256"):
    signature = dkim.sign(
        raw, selector, domain, key, signature_algorithm=algorithm, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


def check(zone, raw, from_address="alice@sender.example", mail_from="alice@sender.example", ip=CLIENT_IP, timeout=5):
    return verdicts.evaluate(raw, from_address, mail_from, ip, HELO, resolver=zone.address, timeout=timeout)


def test_dkim_pass_and_dmarc_aligned_verifies_the_sender(zone, keys):
    verdict = check(zone, sign(message(), keys["rsa"][0]), ip="203.0.113.9")  # SPF fails: DKIM alone carries it
    assert verdict.spf == "fail"
    assert [(s.domain, s.selector, s.result) for s in verdict.dkim] == [("sender.example", "s1", "pass")]
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned, verdict.verified_sender) == (
        "pass",
        "reject",
        True,
        True,
    )


def test_altered_body_or_header_fails_dkim(zone, keys):
    signed = sign(message(), keys["rsa"][0])
    body_changed = signed.replace(b"Hello there.", b"Hello thera.")
    header_changed = signed.replace(b"Subject: Verdicts", b"Subject: Verdict!")
    for raw in (body_changed, header_changed):
        verdict = check(zone, raw, ip="203.0.113.9")
        assert [s.result for s in verdict.dkim] == ["fail"]
        assert (verdict.dmarc, verdict.verified_sender) == ("fail", False)


def test_no_signature_two_signatures_and_ed25519(zone, keys):
    assert check(zone, message()).dkim == []
    twice = sign(sign(message(), keys["rsa"][0]), keys["other"][0], selector=b"s2", domain=b"relay.example")
    results = {(s.domain, s.selector, s.result) for s in check(zone, twice).dkim}
    assert results == {("sender.example", "s1", "pass"), ("relay.example", "s2", "pass")}
    ed = sign(message(), keys["ed"][0], selector=b"ed", algorithm=b"ed25519-sha256")
    assert [(s.selector, s.result) for s in check(zone, ed).dkim] == [("ed", "pass")]


def test_spf_pass_fail_softfail_and_the_lookup_limit(zone):
    raw = message()
    assert check(zone, raw).spf == "pass"
    assert check(zone, raw, ip="203.0.113.9").spf == "fail"
    assert check(zone, raw, mail_from="bob@soft.example").spf == "softfail"
    assert check(zone, raw, mail_from="bob@loops.example").spf == "permerror"


def test_spf_pass_for_another_domain_is_not_aligned(zone):
    """From claims victim.example (p=reject); SPF passes only for sender.example."""
    verdict = check(zone, message(from_addr="ceo@victim.example"), from_address="ceo@victim.example")
    assert verdict.spf == "pass"
    assert (verdict.from_domain, verdict.dmarc, verdict.dmarc_policy) == ("victim.example", "fail", "reject")
    assert (verdict.aligned, verdict.verified_sender) == (False, False)


def test_arc_chain_sealed_by_a_forwarder_passes_and_breaks_when_altered(zone, keys):
    raw = message(extra="Authentication-Results: relay.example; dkim=none\r\n")
    sealed = b"".join(dkim.arc_sign(raw, b"s2", b"relay.example", keys["other"][0], b"relay.example")) + raw
    assert check(zone, sealed).arc == "pass"
    assert check(zone, sealed.replace(b"Hello there", b"Hello thare")).arc == "fail"
    assert check(zone, raw).arc == "none"
    # Forwarded from outside sender.example's SPF: DMARC fails, the forwarder's chain
    # passes; ARC alone proves no From.
    forwarded = check(zone, sealed, ip="203.0.113.9")
    assert (forwarded.dmarc, forwarded.arc, forwarded.verified_sender) == ("fail", "pass", False)


def test_a_dns_server_that_never_answers_gives_temperror_within_the_bound(keys):
    silent = ZoneDns(silent=True)
    try:
        started = time.monotonic()
        verdict = check(silent, sign(message(), keys["rsa"][0]), timeout=1)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < 2.5
    assert verdict.spf == "temperror"
    assert [s.result for s in verdict.dkim] == ["temperror"]
    assert verdict.dmarc == "temperror"
    assert verdict.verified_sender is False


def test_forged_authentication_results_with_our_id_are_removed():
    raw = (
        b"Authentication-Results: postern.localhost; dkim=pass header.d=bank.example;\r\n"
        b"\tdmarc=pass header.from=bank.example\r\n"
        b"Authentication-Results: mx.elsewhere.example; spf=pass\r\n"
        b"From: a@bank.example\r\nSubject: x\r\n\r\nbody\r\n"
    )
    verdict = verdicts.Verdict(spf="none", dmarc="none", from_domain="bank.example")
    value = verdicts.results_header("postern.localhost", verdict, "a@bank.example", HELO)
    stamped = verdicts.stamp(raw, value, "postern.localhost")
    head = stamped.split(b"\r\n\r\n")[0]
    assert head.count(b"Authentication-Results: postern.localhost;") == 1
    assert b"dkim=pass header.d=bank.example" not in stamped
    assert b"Authentication-Results: mx.elsewhere.example; spf=pass" in head
    assert head.startswith(b"Authentication-Results: postern.localhost;\r\n\tspf=none")
    assert stamped.endswith(b"\r\n\r\nbody\r\n")
    headers = verdicts.stamp_headers(
        [("Authentication-Results", "postern.localhost; dkim=pass"), ("Subject", "x")], value, "postern.localhost"
    )
    assert [n for n, v in headers if v.startswith("postern.localhost")] == ["Authentication-Results"]
    assert "dkim=pass" not in headers[0][1]


@pytest.mark.slow
def test_end_to_end_over_smtp_the_api_shows_the_verdict(serve, db_url, zone, keys):
    with seeding(db_url):
        key = make_tenant("acme").agent_key(handle="box", max_mailboxes=5).agent_key
    server = serve(
        env={"POSTERN_TRUST_VERIFY": "true", "POSTERN_TRUST_RESOLVER": zone.address, "POSTERN_TRUST_DNS_TIMEOUT": "3"}
    )
    headers = {"Authorization": f"Bearer {key}"}
    inbox = httpx.post(f"{server.url}/v1/inboxes", headers=headers, json={"username": "box"}, timeout=30).json()
    forged = "Authentication-Results: postern.localhost; dmarc=pass header.from=sender.example\r\n"
    raw = sign(message(extra=forged), keys["rsa"][0])
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail("alice@sender.example", [inbox["address"]], raw)
    listing = httpx.get(f"{server.url}/v1/inboxes/{inbox['id']}/messages", headers=headers, timeout=30).json()
    [summary] = listing["data"]
    assert summary["verified_sender"] is True
    path = f"/v1/inboxes/{inbox['id']}/messages/{summary['id']}"
    full = httpx.get(f"{server.url}{path}", headers=headers, timeout=30).json()
    auth = full["authentication"]
    # The listener's peer is 127.0.0.1, outside sender.example's SPF: DKIM carries DMARC.
    assert auth["spf"] == "fail"
    assert auth["dkim"] == [{"domain": "sender.example", "selector": "s1", "result": "pass"}]
    assert (auth["dmarc"], auth["aligned"], auth["verified_sender"]) == ("pass", True, True)
    ours = [v for n, v in full["headers"] if n.lower() == "authentication-results"]
    assert len(ours) == 1 and "dkim=pass header.d=sender.example header.s=s1" in ours[0]
    assert ("_dmarc.sender.example", "TXT") in zone.queries
    # The SDK and the MCP server carry the same verdict.
    sdk = Message.from_json(full)
    assert sdk.verified_sender is True
    assert sdk.authentication.dkim[0].result == "pass" and sdk.authentication.dmarc_policy == "reject"
    detail = shape.message_detail(sdk, include_html=False, links={}, nonce="n")
    assert detail["verified_sender"] is True and detail["authentication"]["dmarc"] == "pass"
    assert json.loads(json.dumps(detail["authentication"]))["dkim"][0]["selector"] == "s1"


@pytest.mark.slow
def test_verify_false_stores_no_verdict_and_adds_no_header(serve, db_url, zone, keys):
    with seeding(db_url):
        key = make_tenant("acme").agent_key(handle="box", max_mailboxes=5).agent_key
    server = serve(env={"POSTERN_TRUST_VERIFY": "false", "POSTERN_TRUST_RESOLVER": zone.address})
    headers = {"Authorization": f"Bearer {key}"}
    inbox = httpx.post(f"{server.url}/v1/inboxes", headers=headers, json={"username": "box"}, timeout=30).json()
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail("alice@sender.example", [inbox["address"]], sign(message(), keys["rsa"][0]))
    [summary] = httpx.get(f"{server.url}/v1/inboxes/{inbox['id']}/messages", headers=headers, timeout=30).json()["data"]
    path = f"/v1/inboxes/{inbox['id']}/messages/{summary['id']}"
    full = httpx.get(f"{server.url}{path}", headers=headers, timeout=30).json()
    assert (summary["verified_sender"], full["authentication"]) == (False, None)
    assert not [n for n, _ in full["headers"] if n.lower() == "authentication-results"]
    assert zone.queries == []


# -- alignment modes, subdomain policy, SPF edge cases, hostile answers ---------------------


def test_relaxed_alignment_takes_a_subdomain_signature_and_strict_does_not(keys):
    server = ZoneDns(
        {
            ("s1._domainkey.mail.relaxed.example", "TXT"): [keys["rsa"][1]],
            ("s1._domainkey.mail.strict.example", "TXT"): [keys["rsa"][1]],
            ("_dmarc.relaxed.example", "TXT"): ["v=DMARC1; p=reject"],
            ("_dmarc.strict.example", "TXT"): ["v=DMARC1; p=reject; adkim=s; aspf=s"],
        }
    )
    try:
        for domain, aligned in (("relaxed.example", True), ("strict.example", False)):
            raw = sign(message(from_addr=f"a@{domain}"), keys["rsa"][0], domain=f"mail.{domain}".encode())
            verdict = check(server, raw, from_address=f"a@{domain}", mail_from=f"a@{domain}")
            assert [s.result for s in verdict.dkim] == ["pass"]
            assert (verdict.aligned, verdict.dmarc, verdict.verified_sender) == (
                aligned,
                "pass" if aligned else "fail",
                aligned,
            ), domain
    finally:
        server.close()


def test_a_subdomain_without_a_record_falls_back_to_the_organisational_sp_policy():
    server = ZoneDns({("_dmarc.org.example", "TXT"): ["v=DMARC1; p=none; sp=reject"]})
    try:
        verdict = check(server, message(from_addr="x@news.org.example"), from_address="x@news.org.example")
        assert (verdict.from_domain, verdict.dmarc, verdict.dmarc_policy) == ("news.org.example", "fail", "reject")
        top = check(server, message(from_addr="x@org.example"), from_address="x@org.example")
        assert (top.dmarc, top.dmarc_policy) == ("fail", "none")
        assert ("_dmarc.news.org.example", "TXT") in server.queries and ("_dmarc.org.example", "TXT") in server.queries
    finally:
        server.close()


def test_spf_void_lookups_loops_broken_records_and_silence():
    server = ZoneDns(
        {
            # RFC 7208 4.6.4: a third lookup that finds nothing is a permerror.
            ("voids.example", "TXT"): ["v=spf1 a:v1.voids.example a:v2.voids.example a:v3.voids.example -all"],
            ("loop-a.example", "TXT"): ["v=spf1 include:loop-b.example -all"],
            ("loop-b.example", "TXT"): ["v=spf1 include:loop-a.example -all"],
            ("broken.example", "TXT"): ["v=spf1 ip4:not-an-address -all"],
            ("twice.example", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
        }
    )
    try:
        for domain in ("voids.example", "loop-a.example", "broken.example", "twice.example"):
            assert check(server, message(), mail_from=f"x@{domain}").spf == "permerror", domain
        assert check(server, message(), mail_from="x@nothing.example").spf == "none"
    finally:
        server.close()
    silent = ZoneDns(silent=True)
    try:
        assert check(silent, message(), timeout=1).spf == "temperror"
    finally:
        silent.close()


def test_hostile_answers_give_errors_not_crashes(keys):
    huge = "v=spf1 " + " ".join(f"ip4:10.{n // 256}.{n % 256}.1" for n in range(2000)) + " -all"
    server = ZoneDns(
        {
            ("huge.example", "TXT"): [huge],  # ~40 KB of TXT: past any sane UDP answer
            ("s1._domainkey.junk.example", "TXT"): ["v=DKIM1; k=rsa; p=" + "A" * 6000],
            ("_dmarc.junk.example", "TXT"): ["v=DMARC1; p=" + "x" * 3000],
        }
    )
    try:
        started = time.monotonic()
        spf_result = check(server, message(), mail_from="x@huge.example", timeout=3).spf
        signed = sign(message(from_addr="a@junk.example"), keys["rsa"][0], domain=b"junk.example")
        verdict = check(server, signed, from_address="a@junk.example", mail_from="a@junk.example", timeout=3)
        took = time.monotonic() - started
    finally:
        server.close()
    assert spf_result in ("permerror", "temperror", "fail")
    [junk] = verdict.dkim  # 4.5 KB of zero bytes as a key: dkimpy reads it and nothing verifies
    assert junk.result in ("fail", "permerror")
    assert verdict.dmarc in ("none", "permerror", "fail") and verdict.verified_sender is False
    assert took < 7


def test_a_sender_cannot_spend_the_budget_to_hide_a_p_reject(keys):
    """SPF is the sender's to write: four mx: terms of ten hosts each are 44 lookups, past
    the message's 40. The From domain's DMARC record is read first, so p=reject shows."""
    records = {
        ("attacker.example", "TXT"): ["v=spf1 " + " ".join(f"mx:m{n}.attacker.example" for n in range(4)) + " -all"],
        ("_dmarc.victim.example", "TXT"): ["v=DMARC1; p=reject"],
    }
    for n in range(4):
        records[(f"m{n}.attacker.example", "MX")] = [f"10 h{k}.m{n}.attacker.example." for k in range(10)]
        records.update({(f"h{k}.m{n}.attacker.example", "A"): ["198.51.100.1"] for k in range(10)})
    server = ZoneDns(records)
    try:
        verdict = check(
            server,
            message(from_addr="ceo@victim.example"),
            from_address="ceo@victim.example",
            mail_from="x@attacker.example",
        )
    finally:
        server.close()
    assert verdict.spf in ("permerror", "temperror")
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.verified_sender) == ("fail", "reject", False)


def test_more_than_one_from_is_no_from_at_all(zone, keys):
    """RFC 7489 6.6.1: a second From on top of a signed message would borrow its signature."""
    from postern.core.mail.mime import MailLimits, parse

    signed = sign(message(), keys["rsa"][0])
    for raw in (
        b"From: ceo@sender.example\r\n" + signed,
        signed.replace(b"From: Alice <alice@sender.example>", b"From: alice@sender.example, ceo@sender.example"),
    ):
        parsed = parse(raw, MailLimits(10_000_000, 20, 200))
        verdict = verdicts.verify(
            raw, parsed, "alice@sender.example", CLIENT_IP, HELO, resolver=zone.address, timeout=5
        )
        assert (verdict.from_domain, verdict.aligned, verdict.dmarc, verdict.verified_sender) == (
            "",
            False,
            "permerror",
            False,
        )
    one = sign(message(), keys["rsa"][0])
    assert (
        verdicts.verify(
            one,
            parse(one, MailLimits(10_000_000, 20, 200)),
            "alice@sender.example",
            CLIENT_IP,
            HELO,
            resolver=zone.address,
            timeout=5,
        ).verified_sender
        is True
    )
