"""Request rate limits (docs/limits.md): refusals, headers, aggregation of the audit
trail, failed-authentication lockout, and exactness across the workers of a real
``postern serve``, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import math
import smtplib
import time

import httpx
import pytest
from support.fuzz import RunningSmtp
from support.server import seeding
from support.world import make_tenant, seed_inbox

from postern.core.configsections import LimitsConfig
from postern.core.errors import ConfigError
from postern.core.models import Agent, AuditEvent, Inbox, Message
from postern.core.ratelimits import audit_in_aggregate
from postern.core.ratelimits.counters import MemoryCounters
from postern.core.ratelimits.limiter import Limiter
from postern.core.ratelimits.policy import parse_rate

NO_LIMITS = {f.name: "" for f in LimitsConfig.__dataclass_fields__.values() if f.type == "str" and f.name != "storage"}


def limits(**rates) -> LimitsConfig:
    """A [limits] section with only ``rates`` set (every other limit off)."""
    return LimitsConfig(enabled=True, storage="database", **{**NO_LIMITS, **rates})


@pytest.fixture
def rates():
    return {"agent_read": "5/minute", "agent_send": "2/minute", "ip_failed_auth": "4/minute"}


@pytest.fixture
def config(config, rates):
    config.limits = limits(**rates)
    return config


@pytest.fixture
def client(client, postern):
    """The API app, its limiter's clock stopped at one instant: a window's edge cannot
    fall in the middle of a test and reset its counts."""
    if postern.limiter is not None:
        now = time.time()
        postern.limiter.clock = lambda: now
    return client


def seconds_left(postern, period: int) -> int:
    """What Retry-After must say at the frozen instant: the whole seconds to the end of
    the clock-aligned window of ``period`` seconds (at least 1)."""
    now = postern.limiter.clock()
    return max(1, math.ceil((now // period + 1) * period - now))


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_reads_past_the_limit_get_429_with_headers_and_the_limit_named(client, postern):
    enrolled = make_tenant("acme").agent_key()
    for i in range(5):
        ok = client.simulate_get("/v1/me", headers=auth(enrolled.agent_key))
        assert ok.status_code == 200
        assert ok.headers["RateLimit-Policy"] == '"agent_read";q=5;w=60'
        assert ok.headers["RateLimit"].startswith(f'"agent_read";r={4 - i};t=')
    refused = client.simulate_get("/v1/me", headers=auth(enrolled.agent_key))
    assert refused.status_code == 429
    error = refused.json["error"]
    assert (error["type"], error["code"], error["limit"]) == ("rate_limit_error", "rate_limited", "agent_read")
    assert "'agent_read' (5 per minute)" in error["message"]
    reset = int(refused.headers["Retry-After"])
    assert reset == seconds_left(postern, 60)
    assert refused.headers["RateLimit"] == f'"agent_read";r=0;t={reset}'
    # Writes are another class: still allowed.
    made = client.simulate_post("/v1/inboxes", json={"username": "scout"}, headers=auth(enrolled.agent_key))
    assert made.status_code == 201


def test_refusals_are_audited_in_aggregate(client):
    enrolled = make_tenant("acme").agent_key()
    for _ in range(5 + 120):
        client.simulate_get("/v1/me", headers=auth(enrolled.agent_key))
    rows = AuditEvent.select().where(AuditEvent.code == "rate_limited").order_by(AuditEvent.id)
    assert [r.target for r in rows] == ["refused:1", "refused:10", "refused:100"]
    assert all(r.agent_id == enrolled.agent.id and r.outcome == "denied" for r in rows)
    assert [audit_in_aggregate(n) for n in (1, 2, 9, 10, 11, 100, 1000, 1001)] == [1, 0, 0, 1, 0, 1, 1, 0]


@pytest.mark.parametrize("rates", [{"agent_read": "3/minute", "enrollment_read": "5/minute"}])
def test_a_refused_request_costs_its_enrollment_nothing(client, rates):
    tenant = make_tenant("acme")
    _, enroll_key = tenant.enrollment_key()
    keys = [client.simulate_post("/v1/enroll", json={"enrollment_token": enroll_key, "agent_handle": h}) for h in "ab"]
    first, second = (k.json["agent_key"] for k in keys)
    statuses = [client.simulate_get("/v1/me", headers=auth(first)).status_code for _ in range(10)]
    assert statuses == [200] * 3 + [429] * 7
    # The 7 refusals did not count: the sibling still has the enrollment's last 2.
    statuses = [client.simulate_get("/v1/me", headers=auth(second)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = client.simulate_get("/v1/me", headers=auth(second))
    assert refused.json["error"]["limit"] == "enrollment_read"


def test_sends_past_the_limit_are_refused_and_nothing_is_stored(client):
    enrolled = make_tenant("acme").agent_key()
    inbox = client.simulate_post("/v1/inboxes", json={"username": "scout"}, headers=auth(enrolled.agent_key)).json
    mail = {"to": ["someone@example.com"], "subject": "hi", "text": "hello"}
    url = f"/v1/inboxes/{inbox['id']}/messages"
    statuses = [client.simulate_post(url, json=mail, headers=auth(enrolled.agent_key)).status_code for _ in range(4)]
    assert statuses == [201, 201, 429, 429]
    assert Message.select().where(Message.inbox == inbox["id"]).count() == 2


def test_failed_authentication_locks_the_address_out_and_audits_in_aggregate(client):
    enrolled = make_tenant("acme").agent_key()
    bad = "pk_agent_" + "x" * 43
    statuses = [client.simulate_get("/v1/me", headers=auth(bad)).status_code for _ in range(4 + 200)]
    assert statuses == [401] * 4 + [429] * 200
    denied = AuditEvent.select().where(AuditEvent.action == "auth", AuditEvent.code == "invalid_key").count()
    assert denied == 4  # one row per failure within the limit, none past it...
    throttled = AuditEvent.select().where(AuditEvent.action == "auth.throttled").order_by(AuditEvent.id)
    assert [r.target for r in throttled] == ["refused:1", "refused:10", "refused:100"]  # ...then in aggregate
    # Past the limit, even a good key from that address waits for the window to end.
    locked = client.simulate_get("/v1/me", headers=auth(enrolled.agent_key))
    assert locked.status_code == 429 and locked.json["error"]["limit"] == "ip_failed_auth"
    # Another address is not affected.
    other = client.simulate_get("/v1/me", headers=auth(enrolled.agent_key), remote_addr="127.0.0.9")
    assert other.status_code == 200


@pytest.mark.parametrize("rates", [{"enrollment_enroll": "3/hour", "ip_anonymous": "100/minute"}])
def test_an_enrollment_key_mints_no_more_agents_than_its_limit(client, postern, rates):
    _, enroll_key = make_tenant("acme").enrollment_key(max_redemptions=None)
    answers = [
        client.simulate_post("/v1/enroll", json={"enrollment_token": enroll_key, "agent_handle": f"bot{i}"})
        for i in range(6)
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429, 429]
    assert answers[3].json["error"]["limit"] == "enrollment_enroll"
    assert int(answers[3].headers["Retry-After"]) == seconds_left(postern, 3600)
    assert Agent.select().count() == 3  # nothing minted past the limit


@pytest.mark.parametrize("rates", [{"ip_anonymous": "2/minute"}])
def test_anonymous_requests_count_against_the_address(client, rates):
    body = {"enrollment_token": "pk_enroll_" + "y" * 43, "agent_handle": "bot"}
    statuses = [client.simulate_post("/v1/enroll", json=body).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.fixture
def unlimited(config):
    config.limits.enabled = False
    return config


def test_with_limits_off_nothing_is_counted(unlimited, client, postern):
    assert unlimited.limits.agent_read == "5/minute" and postern.limiter is None
    enrolled = make_tenant("acme").agent_key()
    answers = [client.simulate_get("/v1/me", headers=auth(enrolled.agent_key)) for _ in range(30)]
    assert {a.status_code for a in answers} == {200}
    assert "RateLimit" not in answers[-1].headers


def test_windows_reset_on_schedule():
    now = [1_200_000.0]  # a window boundary (a multiple of 60)
    limiter = Limiter(limits(agent_read="2/minute"), MemoryCounters(), clock=lambda: now[0])
    subjects = {"agent": "key_1"}
    assert [limiter.charge(subjects, "read").allowed for _ in range(3)] == [True, True, False]
    now[0] += 59.5
    refused = limiter.charge(subjects, "read")
    assert not refused.allowed and refused.usages[0].reset == 1
    now[0] += 0.5  # the next minute
    assert [limiter.charge(subjects, "read").allowed for _ in range(3)] == [True, True, False]


def test_rates_parse_and_bad_ones_are_refused_at_load(tmp_path):
    assert (parse_rate("60/minute").count, parse_rate("60/minute").seconds) == (60, 60)
    assert parse_rate("1000 per day").seconds == 86400
    assert parse_rate("") is None
    from postern.core.config import load_config

    for bad in ("ten/minute", "5/fortnight", "0/minute", "-1/second"):
        with pytest.raises(ConfigError, match="limits.agent_send"):
            load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), "POSTERN_LIMITS_AGENT_SEND": bad})
    with pytest.raises(ConfigError, match="limits.storage"):
        load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), "POSTERN_LIMITS_STORAGE": "etcd"})


def _wait_for_room_in_the_window(seconds: int = 60, margin: float = 8.0) -> None:
    """Start a race well inside one fixed window, so its edge cannot split it."""
    left = seconds - time.time() % seconds
    if left < margin:
        time.sleep(left + 0.1)


def test_fifty_concurrent_requests_across_both_workers_allow_exactly_the_limit(serve, db_url):
    with seeding(db_url):
        enrolled = make_tenant("acme").agent_key()
    server = serve(services=(), env={"POSTERN_LIMITS_ENABLED": "true", "POSTERN_LIMITS_AGENT_READ": "20/minute"})
    headers = auth(enrolled.agent_key)
    with httpx.Client(timeout=30) as warm:  # both workers up and connected before the race
        assert warm.get(f"{server.url}/healthz").status_code == 200
    _wait_for_room_in_the_window()

    def one(_):
        with httpx.Client(timeout=30) as http:  # a connection each: spread over the workers
            return http.get(f"{server.url}/v1/me", headers=headers).status_code

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses.count(200) == 20
    assert statuses.count(429) == 30


def test_a_damaged_counters_file_is_started_afresh(tmp_path, caplog):
    from postern.core.ratelimits.counters import SqliteCounters

    path = tmp_path / "postern.db-ratelimits"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a header, then garbage
    limiter = Limiter(limits(agent_read="2/minute"), SqliteCounters(path))
    assert [limiter.charge({"agent": "key_1"}, "read").allowed for _ in range(3)] == [True, True, False]
    assert "starting them afresh" in caplog.text


def _send(client, enrolled, inbox, recipients: int):
    mail = {"to": [f"r{i}@example.com" for i in range(recipients)], "subject": "hi", "text": "hello"}
    return client.simulate_post(f"/v1/inboxes/{inbox.id}/messages", json=mail, headers=auth(enrolled.agent_key))


@pytest.mark.parametrize("rates", [{"inbox_send_messages": "2/hour"}])
def test_an_inbox_sends_no_more_messages_an_hour_than_its_limit(client, postern, rates):
    enrolled = make_tenant("acme").agent_key()
    inbox = seed_inbox(postern, enrolled, "scout")
    assert [_send(client, enrolled, inbox, 1).status_code for _ in range(3)] == [201, 201, 429]
    refused = _send(client, enrolled, inbox, 1)
    assert refused.json["error"]["limit"] == "inbox_send_messages"
    assert int(refused.headers["Retry-After"]) == seconds_left(postern, 3600)
    other = seed_inbox(postern, enrolled, "other")  # another inbox of the same agent has its own
    assert _send(client, enrolled, other, 1).status_code == 201


@pytest.mark.parametrize("rates", [{"customer_send_recipients": "5/day"}])
def test_recipients_a_day_count_every_recipient_and_a_refused_send_costs_none(client, postern, rates):
    enrolled = make_tenant("acme").agent_key()
    inbox = seed_inbox(postern, enrolled, "scout")
    assert _send(client, enrolled, inbox, 3).status_code == 201
    before = Message.select().count()
    refused = _send(client, enrolled, inbox, 3)  # 6 > 5
    assert refused.status_code == 429 and refused.json["error"]["limit"] == "customer_send_recipients"
    assert Message.select().count() == before
    assert _send(client, enrolled, inbox, 2).status_code == 201  # exactly 5


def test_a_message_has_at_most_recipients_per_message(client, postern, config):
    config.limits.recipients_per_message = 2
    enrolled = make_tenant("acme").agent_key()
    inbox = seed_inbox(postern, enrolled, "scout")
    refused = _send(client, enrolled, inbox, 3)
    assert refused.status_code == 422 and refused.json["error"]["code"] == "too_many_recipients"
    assert _send(client, enrolled, inbox, 2).status_code == 201


@pytest.mark.parametrize("rates", [{"ip_smtp_mail": "2/minute"}])
def test_smtp_clients_past_their_message_rate_get_451(postern, rates):
    enrolled = make_tenant("acme").agent_key()
    inbox = seed_inbox(postern, enrolled, "scout")
    now = time.time()
    postern.limiter.clock = lambda: now
    server = RunningSmtp(postern)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            for _ in range(2):
                smtp.sendmail("someone@example.org", [inbox.address], b"Subject: hi\r\n\r\nhello\r\n")
            code, text = smtp.mail("someone@example.org")
            assert code == 451 and b"4.7.1" in text
    finally:
        server.stop()
    assert Message.select().where(Message.inbox == inbox.id, Message.direction == "inbound").count() == 3


@pytest.mark.parametrize("rates", [{"fresh_domain_new_recipients": "3/day"}])
def test_a_fresh_domain_ramps_up_its_new_recipients(client, postern, rates):
    enrolled = make_tenant("acme").agent_key()
    inbox = seed_inbox(postern, enrolled, "scout")

    def to(*names):
        mail = {"to": [f"{n}@example.com" for n in names], "subject": "hi", "text": "hello"}
        return client.simulate_post(f"/v1/inboxes/{inbox.id}/messages", json=mail, headers=auth(enrolled.agent_key))

    assert to("a", "b").status_code == 201
    assert to("a", "B").status_code == 201  # known already (any case): nothing new
    refused = to("c", "d")  # 2 + 2 new > 3 on the domain's first day
    assert refused.status_code == 429 and refused.json["error"]["limit"] == "fresh_domain_new_recipients"
    assert to("c", "a").status_code == 201  # 3 new: exactly the first day's

    # A day older, the domain may reach twice as many new recipients a day.
    def age(days):
        for row in Inbox.select().where(Inbox.domain == inbox.domain):
            Inbox.update(created_at=row.created_at - dt.timedelta(days=days)).where(Inbox.id == row.id).execute()

    age(1)
    assert to("d", "e").status_code == 201  # 5 of 6 (the counter is the day's)
    assert to("f", "g").status_code == 429
    # Past the ramp's days it no longer applies.
    age(30)
    assert to("h", "i", "j", "k").status_code == 201
