"""The usage ledger (docs/usage.md): after known actions the figures are exactly those
actions, a retried action is counted once, and no tenant sees another's usage."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import smtplib
import threading

import httpx
import pytest
from click.testing import CliRunner
from support.server import seeding
from support.world import make_tenant, operator_token

from postern.cli import cli
from postern.client import Postern
from postern.core import usage
from postern.core.db import database, write_transaction
from postern.core.models import Inbox, Message, UsageCalls, UsageEvent, utcnow


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def sizes(**where) -> int:
    query = Message.select()
    for name, value in where.items():
        query = query.where(getattr(Message, name) == value)
    return sum(m.size for m in query)


# -- end to end: HTTP in, SMTP in, over a real `postern serve` --------------------------


@pytest.mark.slow
def test_figures_are_exactly_the_actions_performed(serve, db_url):
    with seeding(db_url):
        acme = make_tenant("acme")
        enrolled = acme.agent_key(handle="support", max_mailboxes=5)
    server = serve()

    def api(method, path, key=enrolled.agent_key, headers=None, **kwargs):
        headers = {**bearer(key), **(headers or {})}
        return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)

    inboxes = [api("POST", "/v1/inboxes", json={"username": f"box{i}"}).json() for i in range(3)]
    a, b, _ = inboxes
    sent = []
    for i in range(2):  # three recipients each, one of them an inbox here
        body = {"to": ["x@example.org", b["address"]], "cc": ["y@example.org"], "subject": f"s{i}", "text": "hi"}
        resp = api("POST", f"/v1/inboxes/{a['id']}/messages", json=body, headers={"Idempotency-Key": f"k{i}"})
        assert resp.status_code == 201, resp.text
        sent.append(resp.json())
    retried = api("POST", f"/v1/inboxes/{a['id']}/messages", json=body, headers={"Idempotency-Key": "k1"})
    assert retried.status_code == 200 and retried.json()["id"] == sent[1]["id"]  # replayed: counted once
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        smtp.sendmail("alice@example.org", [a["address"]], b"Subject: one\r\n\r\nto a\r\n")
        smtp.sendmail("bob@example.org", [a["address"], b["address"]], b"Subject: two\r\n\r\nto both\r\n")

    got = api("GET", "/v1/usage")
    assert got.status_code == 200, got.text
    figures = got.json()
    with seeding(db_url):
        customer = acme.customer.id
        received = sizes(customer=customer, direction="inbound")
        assert Message.select().where(Message.direction == "inbound").count() == 2 + 3
        stored = sizes(customer=customer)
    assert figures["inboxes_created"] == 3
    assert (figures["messages_sent"], figures["recipients"]) == (2, 6)
    assert figures["bytes_sent"] == sum(m["size"] for m in sent)
    assert figures["messages_received"] == 2 + 3  # the local copies of both sends, and 1 + 2 over SMTP
    assert figures["bytes_received"] == received
    assert figures["bytes_stored"] == stored == figures["bytes_sent"] + received
    # 3 inbox creations, 2 sends and the replayed one; this read is counted after it answers.
    assert figures["api_calls"] == {"read": 0, "write": 3, "send": 3, "wait": 0, "enroll": 0}
    assert figures["enrollment_id"] == enrolled.enrollment.id
    month = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert figures["since"] == month.isoformat() + "Z" and figures["until"] > figures["since"]

    # The customer's: the same, as this enrollment is its only one (API calls aside: the
    # calls made meanwhile, this one included, count there).
    admin = api("GET", "/v1/admin/usage", key=acme.admin_token).json()
    apart = ("enrollment_id", "api_calls")
    assert {k: v for k, v in admin.items() if k not in apart} == {k: v for k, v in figures.items() if k not in apart}
    assert admin["enrollment_id"] is None


# -- in process ----------------------------------------------------------------------


def make_inboxes(client, key: str, count: int) -> list[dict]:
    made = [client.simulate_post("/v1/inboxes", json={}, headers=bearer(key)) for _ in range(count)]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    return [r.json for r in made]


def test_a_retried_action_is_counted_once(client, postern):
    enrolled = make_tenant("acme").agent_key()
    key = enrolled.agent_key
    once = client.simulate_post("/v1/inboxes", json={"client_id": "c1"}, headers=bearer(key))
    again = client.simulate_post("/v1/inboxes", json={"client_id": "c1"}, headers=bearer(key))
    assert (once.status_code, again.status_code) == (201, 200)
    body = {"to": ["x@example.org"], "subject": "s", "text": "t"}
    path = f"/v1/inboxes/{once.json['id']}/messages"
    for _ in range(3):
        client.simulate_post(path, json=body, headers={**bearer(key), "Idempotency-Key": "same"})
    figures = client.simulate_get("/v1/usage", headers=bearer(key)).json
    assert (figures["inboxes_created"], figures["messages_sent"], figures["recipients"]) == (1, 1, 1)

    # The rule underneath: one row per ref, however often it is written.
    message = Message.get(Message.direction == "outbound")
    inbox = Inbox.get_by_id(once.json["id"])
    with write_transaction():
        usage.message_sent(inbox, message, 1)
        usage.inbox_created(inbox)
    assert UsageEvent.select().count() == 2


def test_an_action_rolled_back_leaves_no_entry(postern):
    enrolled = make_tenant("acme").agent_key()
    inbox = Inbox(
        id="inb_x", customer=enrolled.agent.customer_id, enrollment=enrolled.enrollment.id, agent=enrolled.agent.id
    )
    with pytest.raises(RuntimeError), write_transaction():
        usage.inbox_created(inbox)
        raise RuntimeError("the action failed after its entry")
    assert UsageEvent.select().count() == 0


def test_no_tenant_sees_anothers_usage(client, postern):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    mine, neighbour, theirs = acme.agent_key(handle="me"), acme.agent_key(handle="nb"), globex.agent_key()
    make_inboxes(client, mine.agent_key, 2)
    make_inboxes(client, neighbour.agent_key, 1)
    make_inboxes(client, theirs.agent_key, 4)

    def created(token, **params):
        resp = client.simulate_get(
            "/v1/admin/usage" if token.startswith("pk_admin") else "/v1/usage", params=params, headers=bearer(token)
        )
        return resp.status_code, resp.json.get("inboxes_created", resp.json.get("error", {}).get("code"))

    # An agent key: its own enrollment's; it has no way to name another.
    assert created(mine.agent_key) == (200, 2)
    assert created(neighbour.agent_key) == (200, 1)
    assert created(mine.agent_key, customer_id=globex.customer.id) == (422, "invalid_field")  # unknown parameter
    # An org admin: its customer's; another's is a 404 like a missing one.
    assert created(acme.admin_token) == (200, 3)
    assert created(acme.admin_token, customer_id="acme") == (200, 3)
    assert created(acme.admin_token, customer_id=globex.customer.id) == (404, "not_found")
    assert created(acme.admin_token, customer_id="globex") == (404, "not_found")
    # An operator: any customer, named.
    operator = operator_token()
    assert created(operator, customer_id=globex.customer.id) == (200, 4)
    assert created(operator) == (422, "invalid_field")
    # Admin tokens are not agent keys, nor the reverse.
    for path, token in (("/v1/usage", acme.admin_token), ("/v1/admin/usage", mine.agent_key)):
        assert client.simulate_get(path, headers=bearer(token)).json["error"]["code"] == "wrong_key_type"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"since": "2026-05-02T00:00:00Z", "until": "2026-05-01T00:00:00Z"}, "until"),
        ({"since": "2026-05-01T00:00:00Z", "until": "2026-05-01T00:00:00Z"}, "until"),
        ({"since": "2999-01-01"}, "since"),  # after the default until, this month's end
    ],
)
def test_a_bad_period_is_refused_with_the_field_named(client, postern, params, field):
    acme = make_tenant("acme")
    for path, token in (("/v1/usage", acme.agent_key().agent_key), ("/v1/admin/usage", acme.admin_token)):
        resp = client.simulate_get(path, params=params, headers=bearer(token))
        assert resp.status_code == 422, resp.text
        error = resp.json["error"]
        assert (error["code"], error["field"]) == ("invalid_field", field)
        assert field in error["message"]


def test_a_period_counts_what_happened_within_it(client, postern):
    enrolled = make_tenant("acme").agent_key()
    make_inboxes(client, enrolled.agent_key, 2)
    UsageEvent.update(at=dt.datetime(2026, 3, 31, 23, 59, 59)).where(
        UsageEvent.id == UsageEvent.select().first().id
    ).execute()

    def created(since, until):
        params = {"since": since, "until": until}
        return client.simulate_get("/v1/usage", params=params, headers=bearer(enrolled.agent_key)).json

    march = created("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    assert march["inboxes_created"] == 1
    assert (march["since"], march["until"]) == ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    assert created("2026-04-01T00:00:00Z", "2026-04-02T00:00:00+02:00")["inboxes_created"] == 0  # until is exclusive
    assert created("2026-03-31T23:59:59Z", "2026-04-01T00:00:00Z")["inboxes_created"] == 1  # since is not
    assert client.simulate_get("/v1/usage", headers=bearer(enrolled.agent_key)).json["inboxes_created"] == 1


def test_bytes_stored_is_the_mail_kept_now(client, postern):
    enrolled = make_tenant("acme").agent_key()
    [inbox] = make_inboxes(client, enrolled.agent_key, 1)
    key, path = bearer(enrolled.agent_key), f"/v1/inboxes/{inbox['id']}/messages"
    sent = [
        client.simulate_post(path, json={"to": ["x@example.org"], "text": "a" * n}, headers=key).json
        for n in (10, 5000)
    ]
    before = client.simulate_get("/v1/usage", headers=key).json
    assert before["bytes_stored"] == before["bytes_sent"] == sent[0]["size"] + sent[1]["size"]

    assert client.simulate_delete(f"{path}/{sent[1]['id']}", headers=key).status_code == 204
    after = client.simulate_get("/v1/usage", headers=key).json
    assert after["bytes_stored"] == sent[0]["size"]  # deleted mail is not stored any more
    assert after["bytes_sent"] == before["bytes_sent"]  # but it was sent


def test_count_calls_adds_up_under_concurrency(db):
    acme = make_tenant("acme")
    enrolled = acme.agent_key()
    customer, enrollment, agent = acme.customer.id, enrolled.enrollment.id, enrolled.agent.id
    now = utcnow()
    last_hour = now - dt.timedelta(hours=1)
    threads, per_thread, errors = 8, 40, []
    barrier = threading.Barrier(threads)

    def worker(i):
        try:
            barrier.wait()
            with database.connection_context():
                for j in range(per_thread):
                    route_class = usage.ROUTE_CLASSES[(i + j) % len(usage.ROUTE_CLASSES)]
                    usage.count_calls(customer, enrollment, agent, route_class, at=last_hour if j % 4 == 0 else now)
                usage.count_calls(customer, None, None, "read", n=5, at=now)  # an admin's calls
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    running = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    assert errors == []

    expected = dict.fromkeys(usage.ROUTE_CLASSES, 0)
    for i in range(threads):
        for j in range(per_thread):
            expected[usage.ROUTE_CLASSES[(i + j) % len(usage.ROUTE_CLASSES)]] += 1
    since, until = usage.period(None, None)
    since = min(since, last_hour.replace(minute=0, second=0, microsecond=0))
    whole = usage.summary(customer, since=since, until=until)
    assert whole.api_calls == {**expected, "read": expected["read"] + 5 * threads}
    assert sum(usage.summary(customer, enrollment_id=enrollment, since=since, until=until).api_calls.values()) == (
        threads * per_thread
    )
    # One row per hour and bucket, not one per call.
    assert UsageCalls.select().count() <= 2 * len(usage.ROUTE_CLASSES) + 1
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    recent = usage.summary(customer, enrollment_id=enrollment, since=this_hour, until=until)
    assert sum(recent.api_calls.values()) == threads * (per_thread - per_thread // 4)
    with pytest.raises(ValueError, match="route_class"):
        usage.count_calls(customer, enrollment, agent, "admin")
    with pytest.raises(RuntimeError), database.atomic():  # inside a transaction it joins it
        usage.count_calls(customer, enrollment, agent, "wait", n=1000)
        raise RuntimeError("the request failed: its calls go with it")
    assert usage.summary(customer, since=since, until=until).api_calls["wait"] == expected["wait"]


def test_the_sdk_reads_its_usage(served):
    _, transport = served
    enrolled = make_tenant("acme").agent_key()
    client = Postern(api_key=enrolled.agent_key, base_url="http://postern.test", transport=transport)
    client.inboxes.create("sales")
    now = dt.datetime.now(dt.UTC)
    got = client.usage.get(since=now - dt.timedelta(days=1), until=(now + dt.timedelta(days=1)).replace(tzinfo=None))
    assert (got.inboxes_created, got.messages_sent, set(got.api_calls)) == (1, 0, set(usage.ROUTE_CLASSES))
    assert got.enrollment_id == enrolled.enrollment.id
    assert got.until - got.since == dt.timedelta(days=2)
    assert client.usage.get().since.day == 1


def test_the_cli_reports_one_customer_or_every_one(env, client, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)
    acme, globex = make_tenant("acme"), make_tenant("globex")
    make_inboxes(client, acme.agent_key().agent_key, 2)

    def run(*args):
        result = CliRunner().invoke(cli, ["admin", "usage", *args], obj={})
        assert result.exit_code == 0, result.output
        return result.stdout

    one = json.loads(run("--customer", "acme", "--json"))
    assert (one["customer_id"], one["inboxes_created"]) == (acme.customer.id, 2)
    every = json.loads(run("--json", "--since", "2000-01-01"))
    assert [(u["customer_id"], u["inboxes_created"]) for u in every] == [(acme.customer.id, 2), (globex.customer.id, 0)]
    assert every[0]["since"] == "2000-01-01T00:00:00Z"
    text = run()
    assert acme.customer.id in text and globex.customer.id in text and "inboxes_created" in text
    refused = CliRunner().invoke(cli, ["admin", "usage", "--since", "soon"], obj={})
    assert refused.exit_code == 1 and "since must be an ISO 8601 time" in refused.stderr


def test_figures_equal_the_actions_of_a_concurrent_load_run(serve, db_url):
    """4 agents at once through both workers of a real server: sends (some retried with
    their Idempotency-Key), reads and waits; the ledger holds exactly what was done."""
    with seeding(db_url):
        acme = make_tenant("acme")
        agents = [acme.agent_key(handle=f"agent{i}", max_mailboxes=2) for i in range(4)]
    server = serve(services=())
    sends_each, reads_each = 6, 5

    def run(i):
        key = bearer(agents[i].agent_key)
        with httpx.Client(base_url=server.url, headers=key, timeout=60) as http:
            inbox = http.post("/v1/inboxes", json={"username": f"load{i}"}).json()
            for j in range(sends_each):
                body = {"to": [f"r{j}@example.org", f"s{j}@example.org"], "subject": f"{i}.{j}", "text": "hi"}
                first = http.post(f"/v1/inboxes/{inbox['id']}/messages", json=body, headers={"Idempotency-Key": f"{j}"})
                assert first.status_code == 201, first.text
                if j % 3 == 0:  # a client retrying: replayed, not sent or charged again
                    again = http.post(
                        f"/v1/inboxes/{inbox['id']}/messages", json=body, headers={"Idempotency-Key": f"{j}"}
                    )
                    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
            for _ in range(reads_each):
                assert http.get(f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
            assert http.get(f"/v1/inboxes/{inbox['id']}/messages/wait", params={"timeout": 0}).status_code == 200

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(4)))

    with seeding(db_url):
        got = usage.summary(acme.customer.id, since=usage.period(None, None)[0], until=usage.period(None, None)[1])
    replays = len(range(0, sends_each, 3))
    assert (got.inboxes_created, got.messages_sent, got.recipients) == (4, 4 * sends_each, 4 * sends_each * 2)
    assert got.api_calls == {
        "read": 4 * reads_each,
        "write": 4,
        "send": 4 * (sends_each + replays),
        "wait": 4,
        "enroll": 0,
    }
