"""The per-customer suppression list and RFC 8058 one-click unsubscribe: admins (an
operator for every customer, an org admin for its own) list, add and remove entries
through the API and the CLI, another tenant's ids answer like missing ones, every change
is audited; an unsubscribe link adds its address once, only on POST, and the database
holds only the hash of its token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from support.server import seeding
from support.world import make_tenant, operator_token

from postern.api.suppressions import unsubscribe_url
from postern.cli.app import cli
from postern.core import suppression
from postern.core.db import database
from postern.core.errors import InvalidInput
from postern.core.models import AuditEvent, Suppression, UnsubscribeToken
from postern.core.principal import RequestInfo

ADMIN = "/v1/admin/suppressions"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def acme(client):
    return make_tenant("acme")


@pytest.fixture
def globex(client):
    return make_tenant("globex")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def actions(target: str) -> list[str]:
    return [e.action for e in AuditEvent.select().where(AuditEvent.target == target).order_by(AuditEvent.id)]


# -- the core calls the send path and bounce handling use ----------------------------------


def test_suppress_keeps_the_first_reason_and_lists_are_per_customer(acme, globex):
    cid = acme.customer.id
    assert suppression.suppress(cid, "Bob@Example.org", "bounce", "550 5.1.1 user unknown", message_id="msg_x")
    assert not suppression.suppress(cid, "bob@example.ORG", "complaint", "abuse report")
    [row] = Suppression.select()
    assert (row.address, row.reason, row.detail, row.message_id, row.created_by) == (
        "bob@example.org",
        "bounce",
        "550 5.1.1 user unknown",
        "msg_x",
        "system",
    )
    assert suppression.suppressed_among(cid, ["BOB@example.org", "carol@example.org"]) == {"bob@example.org"}
    assert suppression.suppressed_among(globex.customer.id, ["bob@example.org"]) == set()  # another tenant's list
    assert suppression.suppressed_among(cid, []) == set()
    with pytest.raises(InvalidInput):
        suppression.suppress(cid, "x@example.org", "spite")
    long = suppression.suppress(cid, "dave@example.org", "bounce", "5" * 2000)
    assert long and len(Suppression.get(Suppression.address == "dave@example.org").detail) == 500


# -- the admin API ---------------------------------------------------------------------------


def test_an_operator_adds_lists_and_removes_for_any_customer(client, acme, globex):
    operator = bearer(operator_token())
    body = {"customer": "acme", "address": "Bob@Example.org", "detail": "asked by phone"}
    made = client.simulate_post(ADMIN, headers=operator, json=body)
    assert made.status_code == 201, made.text
    entry = made.json
    assert entry["id"].startswith("sup_") and entry["customer_id"] == acme.customer.id
    assert (entry["address"], entry["reason"], entry["detail"]) == ("bob@example.org", "manual", "asked by phone")
    assert entry["created_by"].startswith("adm_")

    again = client.simulate_post(ADMIN, headers=operator, json={**body, "address": "BOB@example.org"})
    assert again.status_code == 409 and again.json["error"]["code"] == "already_suppressed"
    assert "manual" in again.json["error"]["message"]
    assert Suppression.select().count() == 1

    theirs = client.simulate_post(ADMIN, headers=operator, json={"customer": globex.customer.id, "address": "x@y.org"})
    assert theirs.status_code == 201
    listed = client.simulate_get(ADMIN, headers=operator).json
    assert {e["customer_id"] for e in listed["data"]} == {acme.customer.id, globex.customer.id}
    only = client.simulate_get(ADMIN, headers=operator, params={"customer": "globex"}).json["data"]
    assert [e["address"] for e in only] == ["x@y.org"]
    paged = client.simulate_get(ADMIN, headers=operator, params={"limit": 1}).json
    assert len(paged["data"]) == 1 and paged["next_page_token"]
    rest = client.simulate_get(ADMIN, headers=operator, params={"limit": 1, "page_token": paged["next_page_token"]})
    assert [e["id"] for e in rest.json["data"]] == [theirs.json["id"]]

    nobody = client.simulate_post(ADMIN, headers=operator, json={"address": "z@y.org"})
    assert nobody.status_code == 422 and nobody.json["error"]["field"] == "customer"

    gone = client.simulate_delete(f"{ADMIN}/{entry['id']}", headers=operator)
    assert gone.status_code == 204
    assert not Suppression.select().where(Suppression.id == entry["id"]).exists()
    assert actions("bob@example.org") == ["suppression.add", "suppression.remove"]
    [added] = AuditEvent.select().where(AuditEvent.action == "suppression.add", AuditEvent.target == "x@y.org")
    assert added.customer_id == globex.customer.id and added.actor == "admin"
    again = client.simulate_delete(f"{ADMIN}/{entry['id']}", headers=operator)
    assert again.status_code == 404


def test_an_org_admin_sees_and_changes_only_its_own_customers_list(client, acme, globex):
    mine = client.simulate_post(ADMIN, headers=bearer(acme.admin_token), json={"address": "bob@example.org"})
    assert mine.status_code == 201 and mine.json["customer_id"] == acme.customer.id  # its own, unnamed
    theirs = client.simulate_post(ADMIN, headers=bearer(globex.admin_token), json={"address": "eve@example.org"})
    assert theirs.status_code == 201

    listed = client.simulate_get(ADMIN, headers=bearer(acme.admin_token)).json["data"]
    assert [e["id"] for e in listed] == [mine.json["id"]]
    peek = client.simulate_get(ADMIN, headers=bearer(acme.admin_token), params={"customer": "globex"})
    assert peek.status_code == 404

    # Another tenant's customer and entry answer exactly as missing ones do.
    for ref, missing in ((globex.customer.id, "cus_" + "a" * 26), ("globex", "initech")):
        foreign = client.simulate_post(
            ADMIN, headers=bearer(acme.admin_token), json={"customer": ref, "address": "x@example.org"}
        )
        absent = client.simulate_post(
            ADMIN, headers=bearer(acme.admin_token), json={"customer": missing, "address": "x@example.org"}
        )
        assert foreign.status_code == absent.status_code == 404
        assert foreign.json["error"]["message"].replace(ref, "?") == absent.json["error"]["message"].replace(
            missing, "?"
        )
    foreign = client.simulate_delete(f"{ADMIN}/{theirs.json['id']}", headers=bearer(acme.admin_token))
    absent = client.simulate_delete(f"{ADMIN}/sup_{'a' * 26}", headers=bearer(acme.admin_token))
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json["error"]["code"] == absent.json["error"]["code"] == "not_found"
    assert Suppression.select().count() == 2
    denied = AuditEvent.select().where(AuditEvent.outcome == "denied", AuditEvent.target == theirs.json["id"])
    assert denied.count() == 1  # the attempt left a trail

    mine_gone = client.simulate_delete(f"{ADMIN}/{mine.json['id']}", headers=bearer(acme.admin_token))
    assert mine_gone.status_code == 204
    [removed] = AuditEvent.select().where(AuditEvent.action == "suppression.remove")
    assert (removed.customer_id, removed.target, removed.actor) == (acme.customer.id, "bob@example.org", "admin")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"address": "not an address"}, "address"),
        ({"address": "bob@"}, "address"),
        ({"address": "bob@exa mple.org"}, "address"),
        ({"address": 5}, "address"),
        ({}, "address"),
        ({"address": "bob@example.org", "detail": "x" * 501}, "detail"),
        ({"address": "bob@example.org", "detail": 7}, "detail"),
        ({"address": "bob@example.org", "customer": ["acme"]}, "customer"),
        ({"address": "bob@example.org", "reason": "bounce"}, "reason"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, acme, body, field):
    resp = client.simulate_post(ADMIN, headers=bearer(acme.admin_token), json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json["error"]["field"] == field
    assert Suppression.select().count() == 0


def test_bad_filters_and_wrong_keys_are_refused(client, acme):
    resp = client.simulate_get(ADMIN, headers=bearer(acme.admin_token), params={"reason": "spite"})
    assert resp.status_code == 422 and resp.json["error"]["field"] == "reason"
    agent = acme.agent_key(handle="bot").agent_key
    for method in ("GET", "POST"):
        resp = client.simulate_request(method, ADMIN, headers=bearer(agent), json={"address": "a@b.org"})
        assert resp.status_code == 403 and resp.json["error"]["code"] == "wrong_key_type"
    assert client.simulate_get(ADMIN).status_code == 401
    assert Suppression.select().count() == 0


# -- one-click unsubscribe -------------------------------------------------------------------


def test_unsubscribe_get_only_shows_a_form_and_post_adds_once(client, acme):
    token = suppression.unsubscribe_token(acme.customer.id, "Bob@Example.org", "msg_abc")
    page = client.simulate_get(f"/v1/unsubscribe/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert "bob@example.org" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert Suppression.select().count() == 0  # a link scanner's GET changes nothing

    for _ in range(2):  # the second POST is answered the same and adds nothing
        done = client.simulate_post(f"/v1/unsubscribe/{token}", body=ONE_CLICK, headers=FORM)
        assert done.status_code == 200, done.text
        assert done.headers["content-type"].startswith("text/plain") and "bob@example.org" in done.text
    [row] = Suppression.select()
    assert (row.customer_id, row.address, row.reason, row.message_id) == (
        acme.customer.id,
        "bob@example.org",
        "unsubscribe",
        "msg_abc",
    )
    assert actions("bob@example.org") == ["suppression.unsubscribe"]
    assert suppression.suppressed_among(acme.customer.id, ["bob@example.org"]) == {"bob@example.org"}


def test_unsubscribe_keeps_an_earlier_reason_and_adds_again_after_removal(client, acme):
    suppression.suppress(acme.customer.id, "bob@example.org", "bounce", "550 5.1.1")
    token = suppression.unsubscribe_token(acme.customer.id, "bob@example.org", None)
    assert client.simulate_post(f"/v1/unsubscribe/{token}", body=ONE_CLICK, headers=FORM).status_code == 200
    [row] = Suppression.select()
    assert row.reason == "bounce"
    client.simulate_delete(f"{ADMIN}/{row.id}", headers=bearer(acme.admin_token))
    assert client.simulate_post(f"/v1/unsubscribe/{token}").status_code == 200  # no body: still one click
    assert Suppression.get().reason == "unsubscribe"


@pytest.mark.parametrize(
    "token",
    ["A" * 32, "short", "x" * 300, "has.dots.in.it.aaaaaaaaaaaa", "with%20space" + "a" * 20, "caf%C3%A9" + "a" * 30],
)
def test_unknown_and_garbage_tokens_are_404(client, acme, token):
    suppression.unsubscribe_token(acme.customer.id, "bob@example.org")
    for method in ("GET", "POST"):
        resp = client.simulate_request(method, f"/v1/unsubscribe/{token}", body=ONE_CLICK, headers=FORM)
        assert resp.status_code == 404, resp.text
        error = resp.json["error"]
        assert error["code"] == "not_found" and error["request_id"] == resp.headers["x-request-id"]
    assert Suppression.select().count() == 0


def test_only_the_tokens_hash_is_stored(client, db_url, acme):
    tokens = [suppression.unsubscribe_token(acme.customer.id, f"u{i}@example.org", None) for i in range(3)]
    stored = {t.token_hash for t in UnsubscribeToken.select()}
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    for table in ("unsubscribe_token", "suppression", "audit_event"):
        dump = repr(database.execute_sql(f"SELECT * FROM {table}").fetchall())  # noqa: S608 (fixed names)
        assert not any(t in dump for t in tokens), table
    client.simulate_post(f"/v1/unsubscribe/{tokens[0]}", body=ONE_CLICK, headers=FORM)
    if db_url.startswith("sqlite:///"):
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(db_url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
        raw = b"".join(p.read_bytes() for p in files)
        assert raw and not any(t.encode() in raw for t in tokens)
        assert hashlib.sha256(tokens[0].encode()).hexdigest().encode() in raw  # the search can find what is there


def test_unsubscribe_url_is_built_on_the_public_url(postern, monkeypatch):
    monkeypatch.setattr(postern.config.server, "public_url", "https://postern.example.org")
    assert unsubscribe_url(postern, "tok") == "https://postern.example.org/v1/unsubscribe/tok"


def test_the_audit_row_of_an_unsubscribe_names_the_client(acme):
    token = suppression.unsubscribe_token(acme.customer.id, "bob@example.org")
    row = suppression.unsubscribe(token, RequestInfo(request_id="req_1", client_addr="192.0.2.7"))
    assert row is not None and row.reason == "unsubscribe"
    [event] = AuditEvent.select().where(AuditEvent.action == "suppression.unsubscribe")
    assert (event.actor, event.customer_id, event.client_addr) == ("anonymous", acme.customer.id, "192.0.2.7")
    assert suppression.unsubscribe("nope" * 8) is None


def test_one_click_over_real_http(serve, db_url):
    """As a mail provider does it: a POST with the RFC 8058 body to a running server."""
    with seeding(db_url):
        tenant = make_tenant("acme")
        token = suppression.unsubscribe_token(tenant.customer.id, "bob@example.org", None)
    server = serve(services=())
    url = f"{server.url}/v1/unsubscribe/{token}"
    assert httpx.get(url, timeout=10).status_code == 200
    with seeding(db_url):
        assert Suppression.select().count() == 0
    answers = [httpx.post(url, content=ONE_CLICK, headers=FORM, timeout=10) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert httpx.post(f"{server.url}/v1/unsubscribe/{'b' * 32}", timeout=10).status_code == 404
    with seeding(db_url):
        assert [(s.address, s.reason) for s in Suppression.select()] == [("bob@example.org", "unsubscribe")]


# -- the CLI ---------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli, ["admin", "suppression", *args])


def test_the_cli_adds_lists_and_removes(env, db, acme, globex, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = invoke("add", "--customer", "acme", "--detail", "by hand", "Bob@Example.org", "--json")
    assert out.exit_code == 0, out.output
    entry = json.loads(out.output[out.output.index("{") :])  # after any log line on stderr
    assert (entry["customer_id"], entry["address"], entry["reason"]) == (acme.customer.id, "bob@example.org", "manual")
    assert entry["created_by"] == "cli"

    twice = invoke("add", "--customer", "acme", "bob@example.org")
    assert twice.exit_code == 1 and "already suppressed" in twice.output
    bad = invoke("add", "--customer", "acme", "not-an-address")
    assert bad.exit_code == 1 and "is not an email address" in bad.output
    nobody = invoke("add", "--customer", "initech", "x@example.org")
    assert nobody.exit_code == 1 and "no customer 'initech'" in nobody.output
    assert invoke("add", "x@example.org").exit_code == 2  # --customer is required

    suppression.suppress(globex.customer.id, "eve@example.org", "complaint", "abuse report")
    listed = invoke("list")
    assert entry["id"] in listed.output and "eve@example.org" in listed.output and "by hand" in listed.output
    only = invoke("list", "--customer", "globex", "--json")
    assert [e["address"] for e in json.loads(only.output[only.output.index("[") :])] == ["eve@example.org"]
    complaints = invoke("list", "--reason", "complaint")
    assert "eve@example.org" in complaints.output and "bob@example.org" not in complaints.output

    assert invoke("remove", entry["id"]).exit_code == 0
    assert invoke("remove", entry["id"]).exit_code == 1  # gone
    assert [s.address for s in Suppression.select()] == ["eve@example.org"]
    [added, removed] = AuditEvent.select().where(AuditEvent.target == "bob@example.org").order_by(AuditEvent.id)
    assert (added.action, added.actor, removed.action) == ("suppression.add", "cli", "suppression.remove")
    assert invoke("list", "--customer", "acme").output.strip() == "no suppressed addresses"
