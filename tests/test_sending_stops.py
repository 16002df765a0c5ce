"""The operator's kill switch for outbound mail: a stop on an agent, an enrollment key or
a customer refuses its sends on the very next request, in every worker, and holds its
queued mail until it is lifted."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner
from support.server import seeding
from support.world import make_tenant, operator_token, seed_inbox

from postern.cli.app import cli
from postern.core.mail.delivery import deliver
from postern.core.models import AuditEvent, Message, SendingStop

MAIL = {"to": ["someone@example.org"], "subject": "out", "text": "hi"}


@pytest.fixture
def acme(postern):
    tenant = make_tenant("acme")
    tenant.enrolled = tenant.agent_key(handle="bot")
    tenant.inbox = seed_inbox(postern, tenant.enrolled, "bot")
    tenant.sibling = tenant.agent_key(handle="other")
    tenant.sibling_inbox = seed_inbox(postern, tenant.sibling, "other")
    return tenant


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def send(client, tenant, inbox=None, key=None):
    inbox, key = inbox or tenant.inbox, key or tenant.enrolled.agent_key
    return client.simulate_post(f"/v1/inboxes/{inbox.id}/messages", headers=bearer(key), json=MAIL)


@pytest.mark.parametrize("kind", ["agent", "enrollment", "customer"])
def test_a_stop_refuses_sends_at_once_and_lifting_it_allows_them(client, acme, kind):
    subject = {
        "agent": acme.enrolled.agent.id,
        "enrollment": acme.enrolled.enrollment.id,
        "customer": acme.customer.id,
    }[kind]
    assert send(client, acme).status_code == 201
    made = client.simulate_post(
        "/v1/admin/sending-stops",
        headers=bearer(acme.admin_token),
        json={"kind": kind, "id": subject, "reason": "spam complaints"},
    )
    assert made.status_code == 201 and made.json["kind"] == kind and made.json["subject_id"] == subject
    before = Message.select().count()
    refused = send(client, acme)
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "sending_stopped"
    assert "spam complaints" in refused.json["error"]["message"]
    assert Message.select().count() == before  # nothing stored
    # The sibling agent (another enrollment key of the same customer) is stopped only by a customer stop.
    sibling = send(client, acme, acme.sibling_inbox, acme.sibling.agent_key)
    assert sibling.status_code == (403 if kind == "customer" else 201)
    again = client.simulate_post(
        "/v1/admin/sending-stops", headers=bearer(acme.admin_token), json={"kind": kind, "id": subject}
    )
    assert again.status_code == 409
    lifted = client.simulate_delete(f"/v1/admin/sending-stops/{made.json['id']}", headers=bearer(acme.admin_token))
    assert lifted.status_code == 204
    assert send(client, acme).status_code == 201
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == subject)]
    assert "sending.stop" in actions and "sending.resume" in actions


def test_queued_mail_is_held_by_a_stop_and_leaves_when_it_is_lifted(client, postern, acme):
    sent = send(client, acme)
    Message.update(status="queued", attempts=0).where(Message.id == sent.json["id"]).execute()
    stop = client.simulate_post(
        "/v1/admin/sending-stops",
        headers=bearer(operator_token()),
        json={"kind": "agent", "id": acme.enrolled.agent.id},
    ).json
    held = deliver(postern, sent.json["id"])
    assert (held.status, held.attempts, held.error) == ("queued", 0, "sending stopped for this agent")
    client.simulate_delete(f"/v1/admin/sending-stops/{stop['id']}", headers=bearer(operator_token()))
    assert Message.get_by_id(sent.json["id"]).next_attempt_at <= held.next_attempt_at  # due at once
    assert deliver(postern, sent.json["id"]).status != "queued"


def test_org_admins_stop_only_their_own_and_bad_input_is_refused(client, acme):
    other = make_tenant("bolt")
    foreign = client.simulate_post(
        "/v1/admin/sending-stops",
        headers=bearer(other.admin_token),
        json={"kind": "customer", "id": acme.customer.id},
    )
    assert foreign.status_code == 404  # another tenant's id, as a missing one
    for body, status in (
        ({"kind": "planet", "id": "x"}, 422),
        ({"kind": "agent"}, 422),
        ({"kind": "agent", "id": "agt_nosuchagent"}, 404),
        ({"kind": "agent", "id": acme.enrolled.agent.id, "colour": "red"}, 422),
    ):
        answer = client.simulate_post("/v1/admin/sending-stops", headers=bearer(acme.admin_token), json=body)
        assert answer.status_code == status, body
    assert SendingStop.select().count() == 0
    mine = client.simulate_post(
        "/v1/admin/sending-stops", headers=bearer(acme.admin_token), json={"kind": "customer", "id": acme.customer.id}
    ).json
    listed = client.simulate_get("/v1/admin/sending-stops", headers=bearer(other.admin_token)).json["data"]
    assert listed == []
    gone = client.simulate_delete(f"/v1/admin/sending-stops/{mine['id']}", headers=bearer(other.admin_token))
    assert gone.status_code == 404 and SendingStop.select().count() == 1
    agent_key = client.simulate_get("/v1/admin/sending-stops", headers=bearer(acme.enrolled.agent_key))
    assert agent_key.status_code in (401, 403)


def test_the_cli_stops_lists_and_resumes(env, db, acme, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = CliRunner().invoke(cli, ["admin", "sending", "stop", "--customer", "acme", "--reason", "abuse", "--json"])
    assert out.exit_code == 0, out.output
    stop = json.loads(out.output[out.output.index("{") :])  # after any log line on stderr
    assert stop["kind"] == "customer" and stop["subject_id"] == acme.customer.id
    listed = CliRunner().invoke(cli, ["admin", "sending", "list"])
    assert stop["id"] in listed.output and "abuse" in listed.output
    both = CliRunner().invoke(cli, ["admin", "sending", "stop", "--customer", "acme", "--agent", "x"])
    assert both.exit_code != 0 and "exactly one" in both.output
    assert CliRunner().invoke(cli, ["admin", "sending", "resume", stop["id"]]).exit_code == 0
    assert SendingStop.select().count() == 0


def test_a_stop_takes_effect_on_the_next_request_in_every_worker(serve, db_url):
    with seeding(db_url):
        tenant = make_tenant("acme")
        enrolled = tenant.agent_key(handle="bot")
        operator = operator_token()
    server = serve(services=())
    key = bearer(enrolled.agent_key)
    inbox = httpx.post(f"{server.url}/v1/inboxes", json={"username": "bot"}, headers=key, timeout=10).json()
    url = f"{server.url}/v1/inboxes/{inbox['id']}/messages"
    # Fresh connections, so both workers answer; every one of them must refuse.
    assert httpx.post(url, json=MAIL, headers=key, timeout=10).status_code == 201
    stop = httpx.post(
        f"{server.url}/v1/admin/sending-stops",
        json={"kind": "enrollment", "id": enrolled.enrollment.id},
        headers=bearer(operator),
        timeout=10,
    )
    assert stop.status_code == 201
    statuses = {httpx.post(url, json=MAIL, headers=key, timeout=10).status_code for _ in range(12)}
    assert statuses == {403}
