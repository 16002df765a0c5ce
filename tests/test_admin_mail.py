"""Inboxes and their mail through the admin API (``/v1/admin/inboxes…``) and the CLI
(``postern admin inbox list``, ``postern admin message list|show``): the agent routes'
core calls, with an org admin token kept to its tenant and an operator seeing all."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from support.world import make_tenant, operator_token, seed_inbox

from postern.cli import cli
from postern.core.ids import new_id
from postern.core.mail.ingest import ingest
from postern.core.models import AuditEvent, EnrollmentKey, Inbox, Message


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def deliver(postern, inbox, subject: str, sender: str = "b@example.org", body: str | None = None) -> None:
    body = body or f"body of {subject}"
    raw = f"From: {sender}\r\nTo: {inbox.address}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
    ingest(postern, raw, sender, [inbox.address])


@pytest.fixture
def world(client, postern):
    """acme with two agents (two inboxes), globex with one; every inbox holds the seed
    message ``seed_inbox`` delivers."""
    acme, globex = make_tenant("acme"), make_tenant("globex")
    acme.sales_bot, acme.ops_bot = acme.agent_key(handle="sales"), acme.agent_key(handle="ops")
    acme.sales = seed_inbox(postern, acme.sales_bot, username="sales_team")
    acme.ops = seed_inbox(postern, acme.ops_bot, username="ops")
    globex.bot = globex.agent_key(handle="bot")
    globex.inbox = seed_inbox(postern, globex.bot, username="sales")
    return acme, globex


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [row["id"] for row in resp.json["data"]]


def reads(action: str) -> list[AuditEvent]:
    query = AuditEvent.select().where((AuditEvent.action == action) & (AuditEvent.outcome == "ok"))
    return list(query.order_by(AuditEvent.id))


# -- inboxes ------------------------------------------------------------------------


def test_an_operator_sees_every_tenants_inboxes_and_an_org_admin_its_own(client, world):
    acme, globex = world
    everyone = client.simulate_get("/v1/admin/inboxes", headers=bearer(operator_token()))
    assert ids(everyone) == [acme.sales.id, acme.ops.id, globex.inbox.id]  # oldest first
    assert everyone.json["data"][0]["address"] == "sales_team@acme.agents.localhost"
    assert everyone.json["next_page_token"] is None
    assert ids(client.simulate_get("/v1/admin/inboxes", headers=bearer(acme.admin_token))) == [
        acme.sales.id,
        acme.ops.id,
    ]
    assert ids(client.simulate_get("/v1/admin/inboxes", headers=bearer(globex.admin_token))) == [globex.inbox.id]
    [first, second, third] = reads("inbox.list")
    assert (first.actor, first.customer_id) == ("admin", None)
    assert (second.customer_id, third.customer_id) == (acme.customer.id, globex.customer.id)


def test_filters_narrow_the_listing(client, world):
    acme, globex = world
    operator = bearer(operator_token())

    def listed(**params):
        return ids(client.simulate_get("/v1/admin/inboxes", params=params, headers=operator))

    assert listed(q="SALES") == [acme.sales.id, globex.inbox.id]  # any case
    assert listed(q="sale_") == []  # "_" is a character, not LIKE's wildcard
    assert listed(q="s_team@acme") == [acme.sales.id]
    assert listed(q="%") == []
    assert listed(agent_id=acme.ops_bot.agent.id) == [acme.ops.id]
    assert listed(enrollment_id=acme.sales_bot.enrollment.id) == [acme.sales.id]
    assert listed(customer_id=globex.customer.id) == [globex.inbox.id]
    assert listed(customer_id=acme.customer.id, q="sales") == [acme.sales.id]
    # An org admin's filter naming another tenant's objects finds nothing of theirs.
    mine = bearer(acme.admin_token)
    for name, value in [("customer_id", globex.customer.id), ("agent_id", globex.bot.agent.id)]:
        resp = client.simulate_get("/v1/admin/inboxes", params={name: value}, headers=mine)
        assert ids(resp) == [], name
    too_long = client.simulate_get("/v1/admin/inboxes", params={"q": "a" * 321}, headers=operator)
    assert too_long.status_code == 422 and too_long.json["error"]["field"] == "q"


def test_the_listing_pages(client, postern, world):
    acme, _ = world
    more = [seed_inbox(postern, acme.ops_bot, username=f"extra{n}").id for n in range(3)]
    headers, seen, token = bearer(acme.admin_token), [], None
    while True:
        params = {"limit": "2", **({"page_token": token} if token else {})}
        resp = client.simulate_get("/v1/admin/inboxes", params=params, headers=headers)
        assert len(ids(resp)) <= 2
        seen += ids(resp)
        token = resp.json["next_page_token"]
        if token is None:
            break
    assert seen == [acme.sales.id, acme.ops.id, *more]
    bad = client.simulate_get("/v1/admin/inboxes", params={"limit": "0"}, headers=headers)
    assert bad.status_code == 422 and bad.json["error"]["field"] == "limit"


def test_get_an_inbox(client, world):
    acme, _ = world
    resp = client.simulate_get(f"/v1/admin/inboxes/{acme.sales.id}", headers=bearer(acme.admin_token))
    assert resp.status_code == 200, resp.text
    assert resp.json["address"] == acme.sales.address and resp.json["agent_id"] == acme.sales_bot.agent.id
    [row] = reads("inbox.read")
    assert (row.actor, row.target) == ("admin", acme.sales.id)


def test_another_tenants_inbox_answers_like_a_missing_one(client, world):
    acme, globex = world
    message = Message.get(Message.inbox == globex.inbox.id)
    missing = new_id("inb")
    for suffix in ("", "/messages", f"/messages/{message.id}", "/threads"):
        for method in ("GET", "DELETE") if suffix == "" else ("GET",):
            theirs = client.simulate_request(
                method, f"/v1/admin/inboxes/{globex.inbox.id}{suffix}", headers=bearer(acme.admin_token)
            )
            absent = client.simulate_request(
                method, f"/v1/admin/inboxes/{missing}{suffix}", headers=bearer(acme.admin_token)
            )
            assert (theirs.status_code, absent.status_code) == (404, 404), (method, suffix)
            foreign, nothing = theirs.json["error"], absent.json["error"]
            assert set(foreign) == set(nothing) and foreign["code"] == nothing["code"] == "not_found"
            assert foreign["message"].replace(globex.inbox.id, "<id>") == nothing["message"].replace(missing, "<id>")
    assert Inbox.get_or_none(Inbox.id == globex.inbox.id) is not None


def test_delete_removes_the_inbox_frees_its_slot_and_is_audited(client, world):
    acme, _ = world
    used = EnrollmentKey.get_by_id(acme.sales_bot.enrollment.id).mailboxes_used
    resp = client.simulate_delete(f"/v1/admin/inboxes/{acme.sales.id}", headers=bearer(operator_token()))
    assert resp.status_code == 204, resp.text
    assert Inbox.get_or_none(Inbox.id == acme.sales.id) is None
    assert not Message.select().where(Message.inbox == acme.sales.id).exists()
    assert EnrollmentKey.get_by_id(acme.sales_bot.enrollment.id).mailboxes_used == used - 1
    [row] = reads("inbox.delete")
    assert (row.actor, row.target, row.customer_id) == ("admin", acme.sales.id, acme.customer.id)
    # The tenant's own admin sees the operator's delete in its audit log.
    log = client.simulate_get("/v1/admin/audit", params={"action": "inbox.delete"}, headers=bearer(acme.admin_token))
    assert [e["target"] for e in log.json["data"]] == [acme.sales.id]
    again = client.simulate_get(f"/v1/admin/inboxes/{acme.sales.id}", headers=bearer(acme.admin_token))
    assert again.status_code == 404


@pytest.mark.parametrize(
    "method, suffix", [("GET", ""), ("GET", "/{id}"), ("DELETE", "/{id}"), ("GET", "/{id}/messages")]
)
def test_an_agent_key_is_refused(client, world, method, suffix):
    acme, _ = world
    url = "/v1/admin/inboxes" + suffix.format(id=acme.sales.id)
    resp = client.simulate_request(method, url, headers=bearer(acme.sales_bot.agent_key))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "wrong_key_type"
    assert Inbox.get_or_none(Inbox.id == acme.sales.id) is not None


# -- mail -----------------------------------------------------------------------------


def test_an_admin_lists_and_reads_an_inboxs_mail(client, postern, world):
    acme, _ = world
    deliver(postern, acme.sales, "second")
    sent = client.simulate_post(
        f"/v1/inboxes/{acme.sales.id}/messages",
        headers=bearer(acme.sales_bot.agent_key),
        json={"to": ["someone@example.org"], "subject": "out", "text": "hi"},
    )
    assert sent.status_code == 201, sent.text
    headers, base = bearer(acme.admin_token), f"/v1/admin/inboxes/{acme.sales.id}"

    listing = client.simulate_get(f"{base}/messages", headers=headers)
    assert [m["subject"] for m in listing.json["data"]] == ["out", "second", "seed"]  # newest first
    assert "text" not in listing.json["data"][0]
    inbound = client.simulate_get(f"{base}/messages", params={"direction": "inbound", "limit": "1"}, headers=headers)
    assert [m["subject"] for m in inbound.json["data"]] == ["second"] and inbound.json["next_page_token"]
    rest = client.simulate_get(
        f"{base}/messages",
        params={"direction": "inbound", "page_token": inbound.json["next_page_token"]},
        headers=headers,
    )
    assert [m["subject"] for m in rest.json["data"]] == ["seed"]
    bad = client.simulate_get(f"{base}/messages", params={"direction": "sideways"}, headers=headers)
    assert bad.status_code == 422 and bad.json["error"]["field"] == "direction"

    seed = listing.json["data"][-1]
    read = client.simulate_get(f"{base}/messages/{seed['id']}", headers=headers)
    assert read.status_code == 200, read.text
    assert read.json["text"].strip() == "hello" and read.json["attachments"][0]["filename"] == "a.pdf"
    short = client.simulate_get(f"{base}/messages/{seed['id']}", params={"max_length": "2"}, headers=headers)
    assert short.json["text"] == "he" and short.json["truncated"] is True
    other = client.simulate_get(f"{base}/messages/{new_id('msg')}", headers=headers)
    assert other.status_code == 404

    threads = client.simulate_get(f"{base}/threads", headers=headers)
    assert threads.status_code == 200 and len(threads.json["data"]) >= 1
    assert seed["thread_id"] in {t["id"] for t in threads.json["data"]}

    assert {(r.actor, r.target) for r in reads("message.list")} == {("admin", acme.sales.id)}
    assert [(r.actor, r.target) for r in reads("message.read")] == [("admin", seed["id"])] * 2


def test_an_operator_reads_any_tenants_mail(client, world):
    _, globex = world
    resp = client.simulate_get(f"/v1/admin/inboxes/{globex.inbox.id}/messages", headers=bearer(operator_token()))
    assert [m["subject"] for m in resp.json["data"]] == ["seed"]


# -- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def run(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), obj={})

    return invoke


def test_the_cli_lists_inboxes(run, world):
    acme, globex = world
    result = run("admin", "inbox", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        [acme.sales.id, acme.sales.address],
        [acme.ops.id, acme.ops.address],
        [globex.inbox.id, globex.inbox.address],
    ]
    rows = json.loads(run("admin", "inbox", "list", "--customer", "acme", "--json").stdout)
    assert [r["id"] for r in rows] == [acme.sales.id, acme.ops.id]
    assert rows[0]["address"] == acme.sales.address and rows[0]["created_at"]
    rows = json.loads(run("admin", "inbox", "list", "--q", "SALES", "--limit", "1", "--json").stdout)
    assert [r["id"] for r in rows] == [acme.sales.id]
    rows = json.loads(run("admin", "inbox", "list", "--agent", globex.bot.agent.id, "--json").stdout)
    assert [r["id"] for r in rows] == [globex.inbox.id]
    unknown = run("admin", "inbox", "list", "--customer", "nobody")
    assert unknown.exit_code == 1 and "no customer 'nobody'" in unknown.output


def test_the_cli_lists_and_shows_messages(run, postern, world):
    acme, _ = world
    deliver(postern, acme.sales, "second", sender="carol@example.org")
    result = run("admin", "message", "list", acme.sales.id)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[2], r[3]) for r in rows] == [("carol@example.org", "second"), ("a@example.org", "seed")]
    listed = json.loads(run("admin", "message", "list", acme.sales.id, "--direction", "inbound", "--json").stdout)
    assert [m["id"] for m in listed] == [r[0] for r in rows]
    assert json.loads(run("admin", "message", "list", acme.sales.id, "--direction", "outbound", "--json").stdout) == []

    shown = run("admin", "message", "show", acme.sales.id, rows[0][0])
    assert shown.exit_code == 0, shown.output
    assert "From: carol@example.org" in shown.stdout and "Subject: second" in shown.stdout
    assert "body of second" in shown.stdout
    data = json.loads(run("admin", "message", "show", acme.sales.id, rows[0][0], "--json").stdout)
    assert data["id"] == rows[0][0] and data["text"].strip() == "body of second" and "headers" in data
    assert {r.actor for r in reads("message.read")} == {"cli"}

    deliver(postern, acme.sales, "ansi", body="look\x1b]0;pwned\x07\x1b[2J here")
    [ansi] = [
        m for m in json.loads(run("admin", "message", "list", acme.sales.id, "--json").stdout) if m["subject"] == "ansi"
    ]
    stored = json.loads(run("admin", "message", "show", acme.sales.id, ansi["id"], "--json").stdout)
    assert "\x1b[2J" in stored["text"]  # kept as received; only the terminal output is defused
    shown = run("admin", "message", "show", acme.sales.id, ansi["id"]).stdout
    assert "\x1b" not in shown and "\x07" not in shown and "look" in shown and "here" in shown

    missing = run("admin", "message", "show", acme.sales.id, new_id("msg"))
    assert missing.exit_code == 1 and "no message" in missing.output
    no_inbox = run("admin", "message", "list", new_id("inb"))
    assert no_inbox.exit_code == 1 and "no inbox" in no_inbox.output
