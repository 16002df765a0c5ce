"""Direct delivery to each recipient domain's MX (smtp_local ``mode = "direct"``): the
transport against real aiosmtpd servers on 127.0.0.x (one port, several loopback
addresses), real DNS from ``ZoneDns`` through dnspython, and real MTA-STS policies
served over HTTPS with certificates from a trustme CA."""

# ruff: noqa: F811  (the lab's fixtures are imported by name, then requested as arguments)
from __future__ import annotations

import socket
import threading
import time

import pytest
import trustme
from support.mxlab import (  # noqa: F401  (fixtures)
    POLICY,
    Handler,
    PolicyServer,
    Received,
    ca,
    ca_file,
    free_port,
    make,
    mx,
    port,
    smtp,
    sts,
    zone,
)
from support.zone_dns import ZoneDns

from postern.plugins.smtp_local.direct import DirectTransport, RecipientResult
from postern.plugins.smtp_local.mx import MxResolver
from postern.plugins.smtp_local.stsclient import StsClient, StsPolicy, mx_allowed, parse_policy, parse_txt

RAW = b"From: a@sender.test\nTo: bob@one.test\nSubject: hello\n\nfirst line\n.leading dot\n"


def test_a_message_reaches_the_mx_with_crlf_lines_and_its_leading_dot_intact(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2")
    results = make().deliver("a@sender.test", ["Bob@One.Test"], RAW)
    assert results == {"Bob@One.Test": RecipientResult("sent", "250 2.0.0", "2.0.0 queued", "mx1.one.test")}
    [got] = server.messages
    assert (got.sender, got.rcpts, got.tls) == ("a@sender.test", ["Bob@One.Test"], False)
    assert got.content.endswith(b"\r\nfirst line\r\n.leading dot\r\n") and b"\r\n\r\n" in got.content


def test_mx_hosts_go_by_preference_and_a_refusing_host_passes_to_the_next(zone, smtp, make):
    mx(zone, "two.test", (30, "mx3.two.test", "127.0.0.5"), (10, "mx1.two.test", "127.0.0.3"))
    mx(zone, "two.test", (20, "mx2.two.test", "127.0.0.4"))
    assert MxResolver(zone.address).destinations("TWO.test") == ["mx1.two.test", "mx2.two.test", "mx3.two.test"]
    second, third = smtp("127.0.0.4"), smtp("127.0.0.5")  # nothing listens on 127.0.0.3
    results = make().deliver("a@sender.test", ["x@two.test"], RAW)
    assert results["x@two.test"].status == "sent" and results["x@two.test"].mx == "mx2.two.test"
    assert len(second.messages) == 1 and third.messages == [] and third.peers == set()


def test_a_domain_without_mx_takes_mail_at_its_own_address(zone, smtp, make):
    zone.add("implicit.test", "A", "127.0.0.6")
    server = smtp("127.0.0.6")
    results = make().deliver("", ["x@implicit.test"], RAW)
    assert results["x@implicit.test"].status == "sent" and results["x@implicit.test"].mx == "implicit.test"
    assert server.mails == ["<>"]  # MAIL FROM:<>, the null reverse path of a bounce


def test_null_mx_and_nxdomain_bounce_and_a_silent_dns_defers(zone, make):
    zone.add("null.test", "MX", "0 .")
    zone.add("exists.test", "TXT", "v=spf1 -all")  # a name without MX or address
    results = make().deliver("a@sender.test", ["x@null.test", "y@nowhere.test", "z@exists.test"], RAW)
    assert {r: (v.status, v.code) for r, v in results.items()} == {
        "x@null.test": ("bounced", "null_mx"),
        "y@nowhere.test": ("bounced", "nxdomain"),
        "z@exists.test": ("bounced", "no_mx"),
    }
    silent = ZoneDns(silent=True)
    try:
        started = time.monotonic()
        [result] = make(resolver=silent.address, timeout=1).deliver("a@sender.test", ["x@one.test"], RAW).values()
        assert (result.status, result.code) == ("deferred", "dns") and time.monotonic() - started < 4
    finally:
        silent.close()


def test_greylisting_defers_then_the_next_attempt_is_sent(zone, smtp, make):
    mx(zone, "grey.test", (10, "mx.grey.test", "127.0.0.7"))
    seen: set[str] = set()

    def greylist(address):
        if address in seen:
            return "250 2.1.5 OK"
        seen.add(address)
        return "451 4.7.1 Greylisted, come back later"

    server = smtp("127.0.0.7", rcpt=greylist)
    transport = make()
    first = transport.deliver("a@sender.test", ["x@grey.test"], RAW)["x@grey.test"]
    assert (first.status, first.code, first.mx) == ("deferred", "451 4.7.1", "mx.grey.test")
    assert "Greylisted" in first.text and server.messages == []
    assert transport.deliver("a@sender.test", ["x@grey.test"], RAW)["x@grey.test"].status == "sent"
    assert [m.rcpts for m in server.messages] == [["x@grey.test"]]


def test_one_unknown_user_bounces_while_the_other_on_the_domain_is_sent(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2", rcpt=lambda a: "550 5.1.1 No such user" if a.startswith("nobody") else "250 OK")
    results = make().deliver("a@sender.test", ["nobody@one.test", "alice@one.test"], RAW)
    assert (results["nobody@one.test"].status, results["nobody@one.test"].code) == ("bounced", "550 5.1.1")
    assert results["alice@one.test"].status == "sent"
    assert [m.rcpts for m in server.messages] == [["alice@one.test"]]


def test_one_call_to_several_domains_is_sent_deferred_and_bounced_apart(zone, smtp, make):
    mx(zone, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    mx(zone, "busy.test", (10, "mx.busy.test", "127.0.0.3"))
    zone.add("null.test", "MX", "0 .")
    ok = smtp("127.0.0.2")
    smtp("127.0.0.3", rcpt=lambda a: "452 4.3.1 Insufficient system storage")
    results = make().deliver("a@sender.test", ["a@ok.test", "b@busy.test", "c@null.test", "not-an-address"], RAW)
    assert {r: v.status for r, v in results.items()} == {
        "a@ok.test": "sent",
        "b@busy.test": "deferred",
        "c@null.test": "bounced",
        "not-an-address": "bounced",
    }
    assert results["b@busy.test"].code == "452 4.3.1" and results["not-an-address"].code == "bad_address"
    assert [m.rcpts for m in ok.messages] == [["a@ok.test"]]


def hanging_server(address: str, port: int, trickle: bool):
    """Accepts and never answers a line: silent, or a greeting one byte at a time."""
    listener = socket.create_server((address, port))
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        give_up = time.monotonic() + 10  # a transport that never stops must not hang the test run
        while not stop.is_set() and time.monotonic() < give_up:
            if trickle:
                try:
                    conn.send(b"2")
                except OSError:
                    break
            stop.wait(0.2)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_server_that_never_finishes_a_reply_is_deferred_by_the_deadline(zone, port, make, trickle):
    mx(zone, "slow.test", (10, "mx.slow.test", "127.0.0.8"))
    listener, stop = hanging_server("127.0.0.8", port, trickle)
    try:
        # A byte every 0.2 s never trips the 1 s per-read timeout: only the deadline ends it.
        transport = make(timeout=1 if trickle else 0.5, deadline=2)
        started = time.monotonic()
        result = transport.deliver("a@sender.test", ["x@slow.test"], RAW)["x@slow.test"]
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert (result.status, result.code) == ("deferred", "timeout")
    assert (1.8 < elapsed < 3) if trickle else elapsed < 2.5


def test_enforced_mta_sts_without_starttls_defers_and_sends_nothing(zone, smtp, sts, make):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    policy = sts("sts.test", "enforce", "mx.sts.test")
    server = smtp("127.0.0.9")  # no STARTTLS offered
    result = make(mta_sts_https_port=policy.port).deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"]
    assert (result.status, result.code) == ("deferred", "mta_sts") and "STARTTLS" in result.text
    assert server.mails == [] and server.messages == [] and policy.hits == 1


def test_enforced_mta_sts_with_a_valid_certificate_is_sent_over_tls(zone, smtp, sts, make):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    policy = sts("sts.test", "enforce", "*.sts.test")
    server = smtp("127.0.0.9", tls_name="mx.sts.test")
    result = make(mta_sts_https_port=policy.port).deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"]
    assert result.status == "sent"
    assert [m.tls for m in server.messages] == [True]


def test_enforced_mta_sts_refuses_a_certificate_for_another_name(zone, smtp, sts, make):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    policy = sts("sts.test", "enforce", "mx.sts.test")
    server = smtp("127.0.0.9", tls_name="other.example")
    result = make(mta_sts_https_port=policy.port).deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"]
    assert (result.status, result.code) == ("deferred", "mta_sts") and server.messages == []


def test_an_mx_the_enforced_policy_does_not_name_is_never_contacted(zone, smtp, sts, make):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    policy = sts("sts.test", "enforce", "mx.elsewhere.test")
    server = smtp("127.0.0.9", tls_name="mx.sts.test")
    result = make(mta_sts_https_port=policy.port).deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"]
    assert (result.status, result.code) == ("deferred", "mta_sts")
    assert server.peers == set() and server.messages == []


def test_testing_mode_and_a_policy_served_as_html_deliver_anyway(zone, smtp, sts, make):
    mx(zone, "t.test", (10, "mx.t.test", "127.0.0.9"))
    mx(zone, "html.test", (10, "mx.html.test", "127.0.0.9"))
    testing = sts("t.test", "testing", "mx.elsewhere.test")
    html = sts("html.test", "enforce", "mx.elsewhere.test", content_type="text/html")
    server = smtp("127.0.0.9")
    for domain, policy in (("t.test", testing), ("html.test", html)):
        result = make(mta_sts_https_port=policy.port).deliver("a@sender.test", [f"x@{domain}"], RAW)[f"x@{domain}"]
        assert result.status == "sent" and policy.hits == 1
    assert len(server.messages) == 2


def test_a_policy_is_fetched_once_until_its_id_changes_and_outlives_a_dns_failure(zone, smtp, sts, make, ca_file):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    policy = sts("sts.test", "enforce", "mx.sts.test")
    server = smtp("127.0.0.9", tls_name="mx.sts.test")
    transport = make(mta_sts_https_port=policy.port)
    for _ in range(2):
        assert transport.deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"].status == "sent"
    assert policy.hits == 1 and len(server.messages) == 2
    zone.records[("_mta-sts.sts.test", "TXT")] = ["v=STSv1; id=20260202"]
    assert transport.deliver("a@sender.test", ["x@sts.test"], RAW)["x@sts.test"].status == "sent"
    assert policy.hits == 2

    client = StsClient(MxResolver(zone.address, timeout=1), https_port=policy.port, ca_file=ca_file)
    assert client.policy("sts.test").mode == "enforce" and policy.hits == 3
    del zone.records[("_mta-sts.sts.test", "TXT")]  # record gone (or blocked): the cached policy holds
    assert client.policy("sts.test").mx == ("mx.sts.test",) and policy.hits == 3


def test_opportunistic_tls_encrypts_even_with_a_certificate_nobody_vouches_for(zone, smtp, make):
    mx(zone, "plain.test", (10, "mx.plain.test", "127.0.0.10"))
    server = smtp("127.0.0.10", tls_name="someone-else.example", tls_ca=trustme.CA())
    assert make().deliver("a@sender.test", ["x@plain.test"], RAW)["x@plain.test"].status == "sent"
    assert [m.tls for m in server.messages] == [True]


def test_deliveries_to_one_mx_share_a_connection_until_closed_or_used_up(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    mx(zone, "alias.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2", tls_name="mx1.one.test")
    transport = make()
    for rcpt in ("x@one.test", "y@alias.test"):
        assert transport.deliver("a@sender.test", [rcpt], RAW)[rcpt].status == "sent"
    assert len(server.messages) == 2 and len(server.peers) == 1
    transport.close()
    assert transport.deliver("a@sender.test", ["z@one.test"], RAW)["z@one.test"].status == "sent"
    assert len(server.peers) == 2

    once = make(reuse_messages=1)
    for rcpt in ("p@one.test", "q@one.test"):
        assert once.deliver("a@sender.test", [rcpt], RAW)[rcpt].status == "sent"
    assert len(server.peers) == 4 and len(server.messages) == 5


def test_a_pooled_connection_is_dropped_when_idle_too_long_or_dead(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    mx(zone, "two.test", (10, "mx.two.test", "127.0.0.3"))
    server = smtp("127.0.0.2")
    transport = make(reuse_seconds=0.3)
    for pause in (0, 0.5):  # the second comes after reuse_seconds: a new connection
        time.sleep(pause)
        assert transport.deliver("a@sender.test", ["x@one.test"], RAW)["x@one.test"].status == "sent"
    assert len(server.peers) == 2
    hasty = smtp("127.0.0.3", timeout=0.3)  # hangs up on a client idle for 0.3 s
    lasting = make(reuse_seconds=30)
    for pause in (0, 0.6):  # the pooled connection is dead by then: NOOP finds out
        time.sleep(pause)
        assert lasting.deliver("a@sender.test", ["y@two.test"], RAW)["y@two.test"].status == "sent"
    assert len(hasty.messages) == 2 and len(hasty.peers) == 2


def test_threads_delivering_at_once_each_get_their_own_connection(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2")
    transport = make()
    outcomes: list[str] = []

    def send(n: int):
        for i in range(3):
            outcomes.append(
                transport.deliver("a@sender.test", [f"t{n}-{i}@one.test"], RAW)[f"t{n}-{i}@one.test"].status
            )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["sent"] * 12 and len(server.messages) == 12
    assert all(len(m.rcpts) == 1 for m in server.messages) and len(server.peers) <= 4


def test_policy_text_and_mx_patterns():
    mode, patterns, age = parse_policy(
        "version: STSv1\nmode: enforce\nmx: mail.example\nmx: *.Example.org.\nmax_age: 60\n"
    )
    assert (mode, patterns, age) == ("enforce", ("mail.example", "*.example.org"), 60)
    policy = StsPolicy("example.org", "1", mode, patterns, age, 0)
    assert mx_allowed(policy, "MX1.example.org.") and mx_allowed(policy, "mail.example")
    assert not mx_allowed(policy, "a.b.example.org") and not mx_allowed(policy, "example.org")
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: enforce\nmax_age: 1"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    assert parse_txt(["v=STSv1; id=abc123"]) == "abc123"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None and parse_txt(["v=STSv1; id=no-dash"]) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"helo": ""}, "helo"),
        ({"resolver": "127.0.0.1"}, "host:port"),
        ({"timeout": 10, "deadline": 5}, "deadline"),
        ({"source_address": "mail.example"}, "IP address"),
        ({"ca_file": "/nonexistent.pem"}, "ca_file"),
    ],
)
def test_bad_settings_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        DirectTransport(**{"helo": "out.postern.test", **options})


def test_dns_answers_are_kept_for_their_ttl(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2")
    transport = make(dns_cache=True)
    for i in range(3):
        assert transport.deliver("a@sender.test", [f"bob{i}@one.test"], RAW)[f"bob{i}@one.test"].status == "sent"
    assert len(server.messages) == 3
    asked = [q for q in zone.queries if q[0] in ("one.test", "mx1.one.test", "_mta-sts.one.test")]
    assert sorted(set(asked)) == sorted(asked)  # each name and type asked once, then answered from the cache
    assert ("one.test", "MX") in asked and ("mx1.one.test", "A") in asked


def test_alarms_fire_in_order_once_and_never_when_cancelled():
    from postern.plugins.smtp_local.alarms import Alarms

    alarms, fired, done = Alarms(), [], threading.Event()
    alarms.arm(0.3, lambda: (fired.append("late"), done.set()))
    cancelled = alarms.arm(0.1, lambda: fired.append("cancelled"))
    alarms.arm(0.05, lambda: fired.append("early"))
    alarms.arm(0.02, lambda: 1 / 0)  # a failing alarm stops none of the others
    cancelled.cancel()
    assert done.wait(5)
    time.sleep(0.05)
    assert fired == ["early", "late"]


def test_mail_leaves_from_the_source_address_with_the_helo_name(zone, smtp, make):
    mx(zone, "one.test", (10, "mx1.one.test", "127.0.0.2"))
    server = smtp("127.0.0.2")
    results = make(source_address="127.0.0.5", helo="mail.sender.test").deliver("a@sender.test", ["b@one.test"], RAW)
    assert results["b@one.test"].status == "sent"
    assert {peer[0] for peer in server.peers} == {"127.0.0.5"}  # bound to the configured address
    assert server.ehlo_names == ["mail.sender.test"]
