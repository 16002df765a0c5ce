"""The console's "Usage & limits" page over the real API app (falcon's test client): the
month's usage as the ledger counted it, tenancy (an org admin sees only its own
customer), the limits in force, and the sending kill switch through the same core calls
as /v1/admin/sending-stops, audited, with CSRF on every change."""

from __future__ import annotations

import re

import falcon.testing
import pytest
from support.world import make_tenant, operator_token, seed_inbox
from test_console import csrf_of, post, sign_in

from postern.api import create_app
from postern.console.usagepage import human_bytes, month_bounds
from postern.core.errors import InvalidInput
from postern.core.models import AuditEvent, SendingStop
from postern.core.runtime import build_postern

MAIL = {"to": ["someone@example.org"], "subject": "out", "text": "hi"}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def world(postern):
    a, b = make_tenant("acme"), make_tenant("bolt")
    a.enrolled = a.agent_key(handle="sales")
    a.inbox = seed_inbox(postern, a.enrolled, "sales")  # one inbox made, one message received
    b.enrolled = b.agent_key(handle="ops")
    b.inbox = seed_inbox(postern, b.enrolled, "ops")
    return a, b


def send(client, tenant, **mail):
    return client.simulate_post(
        f"/v1/inboxes/{tenant.inbox.id}/messages", headers=bearer(tenant.enrolled.agent_key), json={**MAIL, **mail}
    )


def usage_row(html: str, customer_id: str) -> list[str]:
    """The figures of ``customer_id``'s row in the usage table (cells after the first)."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        if customer_id in row and "pill" not in row and "Resume" not in row:
            cells = re.findall(r"<td>(.*?)</td>", row, re.S)
            return [re.sub(r"<[^>]+>", " ", c).split()[0] if c.strip() else "" for c in cells[1:]]
    raise AssertionError(f"no usage row for {customer_id}")


def test_human_bytes_and_months():
    assert human_bytes(0) == "0 B" and human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(20 * 1024 * 1024) == "20.0 MiB"
    start, end = month_bounds("2026-12")
    assert (start.year, start.month, end.year, end.month) == (2026, 12, 2027, 1)
    for bad in ("2026-13", "26-01", "2026-1", "x"):
        with pytest.raises(InvalidInput):
            month_bounds(bad)


def test_an_org_admin_sees_its_own_usage_as_performed_and_no_other_tenant(client, world):
    a, b = world
    made = client.simulate_post("/v1/inboxes", headers=bearer(a.enrolled.agent_key), json={"username": "second"})
    assert made.status_code == 201
    assert send(client, a).status_code == 201
    assert send(client, a, to=["x@example.org", "y@example.org"]).status_code == 201
    assert send(client, b).status_code == 201  # the other tenant's usage is not shown
    cookies = sign_in(client, a.admin_token)
    page = client.simulate_get("/console/usage", cookies=cookies)
    assert page.status_code == 200, page.text
    assert "Usage &amp; limits</a>" in page.text  # in the navigation
    figures = usage_row(page.text, a.customer.id)
    # inboxes created, messages sent, recipients, (bytes sent), messages received
    assert figures[:3] == ["2", "2", "3"] and figures[4] == "1"
    assert b.customer.id not in page.text and "bolt" not in page.text.lower()
    assert a.enrolled.enrollment.id in page.text  # broken out per enrollment key
    assert "<code>agent_send</code>" in page.text and "recipients per message" in page.text.lower()
    assert "Backend: <code>free</code>" in page.text
    assert AuditEvent.select().where(AuditEvent.action == "usage.read").count() >= 1
    # The previous month: nothing was used then.
    link = re.search(r'href="/console/usage\?month=(\d{4}-\d{2})"', page.text).group(1)
    before = client.simulate_get(f"/console/usage?month={link}", cookies=cookies)
    assert before.status_code == 200 and f"Usage in {link}" in before.text
    assert usage_row(before.text, a.customer.id)[:3] == ["0", "0", "0"]
    assert client.simulate_get("/console/usage?month=2026-13", cookies=cookies).status_code == 422


def test_an_operator_sees_every_customer_one_row_each(client, world):
    a, b = world
    assert send(client, b).status_code == 201
    cookies = sign_in(client, operator_token())
    page = client.simulate_get("/console/usage", cookies=cookies)
    assert page.status_code == 200, page.text
    assert usage_row(page.text, b.customer.id)[1] == "1"
    assert usage_row(page.text, a.customer.id)[1] == "0"
    assert page.text.count(f'<code class="muted">{a.customer.id}</code>') == 1


def test_a_stop_from_the_page_refuses_the_agents_send_and_resume_lifts_it(client, world):
    a, b = world
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    agent_id = a.enrolled.agent.id
    made = post(client, "/console/usage/stops", cookies, csrf, kind="agent", id=agent_id, reason="complaints")
    assert made.status_code == 303 and made.headers["location"].endswith("/console/usage")
    refused = send(client, a)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "sending_stopped"
    page = client.simulate_get("/console/usage", cookies=cookies)
    stop = SendingStop.get(SendingStop.subject_id == agent_id)
    assert stop.id in page.text and "complaints" in page.text
    again = post(client, "/console/usage/stops", cookies, csrf, kind="agent", id=agent_id)
    assert again.status_code == 409 and "already_stopped" in again.text
    # Another tenant's agent reads as missing; a bad kind is refused.
    assert post(client, "/console/usage/stops", cookies, csrf, kind="agent", id=b.enrolled.agent.id).status_code == 404
    assert post(client, "/console/usage/stops", cookies, csrf, kind="planet", id=agent_id).status_code == 422
    lifted = post(client, f"/console/usage/stops/{stop.id}/resume", cookies, csrf)
    assert lifted.status_code == 303
    assert send(client, a).status_code == 201
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == agent_id)]
    assert "sending.stop" in actions and "sending.resume" in actions
    assert "Nothing is stopped." in client.simulate_get("/console/usage", cookies=cookies).text


def test_the_agent_page_button_stops_that_agent(client, world):
    a, _ = world
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    agent_id = a.enrolled.agent.id
    assert 'action="/console/usage/stops"' in client.simulate_get(f"/console/agents/{agent_id}", cookies=cookies).text
    made = post(client, "/console/usage/stops", cookies, csrf, kind="agent", id=agent_id, back="agent")
    assert made.status_code == 303 and made.headers["location"].endswith(f"/console/agents/{agent_id}")
    assert send(client, a).status_code == 403


def test_another_tenants_stop_cannot_be_resumed_and_posts_need_csrf(client, world):
    a, b = world
    theirs = client.simulate_post(
        "/v1/admin/sending-stops", headers=bearer(b.admin_token), json={"kind": "customer", "id": b.customer.id}
    )
    assert theirs.status_code == 201
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    page = client.simulate_get("/console/usage", cookies=cookies)
    assert theirs.json["id"] not in page.text  # not listed either
    refused = post(client, f"/console/usage/stops/{theirs.json['id']}/resume", cookies, csrf)
    assert refused.status_code == 404 and "That did not work" in refused.text
    assert SendingStop.get_or_none(SendingStop.id == theirs.json["id"]) is not None
    assert send(client, b).status_code == 403  # still stopped
    # Without the CSRF token nothing runs, either way.
    assert post(client, "/console/usage/stops", cookies, kind="agent", id=a.enrolled.agent.id).status_code == 403
    assert SendingStop.get_or_none(SendingStop.subject_id == a.enrolled.agent.id) is None
    operator = sign_in(client, operator_token())
    assert post(client, f"/console/usage/stops/{theirs.json['id']}/resume", operator).status_code == 403
    assert SendingStop.get_or_none(SendingStop.id == theirs.json["id"]) is not None
    denied = AuditEvent.select().where((AuditEvent.code == "csrf") & (AuditEvent.outcome == "denied")).count()
    assert denied == 2


def test_the_metered_backends_statement_is_shown(config, db):
    config.roles["billing"].backend, config.roles["billing"].explicit = "metered", True
    plans = {"starter": {"inbox_create": {"included": 5, "cap": 7}, "message_send": {"included": 1, "overage": 0.5}}}
    config.roles["billing"].options["metered"] = {"plans": plans, "default_plan": "starter"}
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    a = make_tenant("acme")
    a.enrolled = a.agent_key(handle="sales")
    a.inbox = seed_inbox(postern, a.enrolled, "sales")
    assert send(client, a).status_code == 201 and send(client, a).status_code == 201
    page = client.simulate_get("/console/usage", cookies=sign_in(client, a.admin_token))
    assert page.status_code == 200, page.text
    assert "Backend: <code>metered</code>" in page.text and "Plan statement for acme" in page.text

    def cells(action):
        return re.search(rf"<tr><td>{re.escape(action)}</td>(.*?)</tr>", page.text).group(1)

    # included, cap, used, overage (units, cost)
    assert re.findall(r"<td>(.*?)</td>", cells("inbox.create")) == ["5", "7", "1", "0"]
    assert re.findall(r"<td>(.*?)</td>", cells("message.send")) == ["1", "none", "2", "1 (0.5)"]


def test_the_customers_page_stops_a_customer(client, world):
    a, _ = world
    cookies = sign_in(client, operator_token())
    csrf = csrf_of(client, cookies)
    listing = client.simulate_get("/console/customers", cookies=cookies)
    assert f"Stop sending for {a.label}" in listing.text
    made = post(client, "/console/usage/stops", cookies, csrf, kind="customer", id=a.customer.id)
    assert made.status_code == 303
    assert send(client, a).status_code == 403
