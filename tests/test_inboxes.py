"""Inboxes: one call, idempotent retries, paging, quotas, and provisioning all-or-nothing."""

import falcon.testing
import pytest
from support.world import make_tenant

from postern.api import create_app
from postern.core.backends import InboxRef, Receiver, TemporaryFailure
from postern.core.hookspecs import hookimpl
from postern.core.models import EnrollmentKey, Inbox


class RecordingReceiver(Receiver):
    """A receive backend that records provisioning and fails when told to."""

    name = "recording"
    calls: list = []
    fail_next = False

    def provision(self, inbox: InboxRef) -> None:
        if RecordingReceiver.fail_next:
            RecordingReceiver.fail_next = False
            raise TemporaryFailure("mail store is restarting", retry_after=7)
        RecordingReceiver.calls.append(("provision", inbox))

    def deprovision(self, inbox: InboxRef) -> None:
        RecordingReceiver.calls.append(("deprovision", inbox))


class ReceiverPlugin:
    @hookimpl
    def postern_register_backends(self, register):
        register("receive", "recording", RecordingReceiver)


@pytest.fixture
def client(config, db):
    RecordingReceiver.calls = []
    config.roles["receive"].backend, config.roles["receive"].explicit = "recording", True
    from postern.core.plugins import get_plugin_manager
    from postern.core.registry import BackendRegistry
    from postern.core.runtime import Postern

    pm = get_plugin_manager()
    pm.register(ReceiverPlugin())
    postern = Postern(config, pm, BackendRegistry.from_plugin_manager(pm))
    postern.validate_backends()
    return falcon.testing.TestClient(create_app(postern))


def auth(result):
    return {"Authorization": f"Bearer {result.agent_key}"}


def test_create_provisions_and_delete_deprovisions(client):
    acme = make_tenant("acme")
    agent = acme.agent_key(handle="support-bot", max_mailboxes=3)
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"display_name": "Support"})
    assert resp.status_code == 201
    inbox = resp.json
    assert inbox["address"] == "support-bot@acme.agents.localhost" and inbox["display_name"] == "Support"
    assert RecordingReceiver.calls == [("provision", InboxRef(inbox["id"], acme.customer.id, inbox["address"]))]
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 1
    # The handle is taken now: the next default username gets a suffix.
    second = client.simulate_post("/v1/inboxes", headers=auth(agent), json={}).json
    assert second["username"].startswith("support-bot-") and second["address"] != inbox["address"]
    assert client.simulate_delete(f"/v1/inboxes/{inbox['id']}", headers=auth(agent)).status_code == 204
    assert RecordingReceiver.calls[-1] == ("deprovision", InboxRef(inbox["id"], acme.customer.id, inbox["address"]))
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 1
    assert client.simulate_get(f"/v1/inboxes/{inbox['id']}", headers=auth(agent)).status_code == 404
    assert client.simulate_delete(f"/v1/inboxes/{inbox['id']}", headers=auth(agent)).status_code == 404


def test_failed_provisioning_leaves_nothing_behind(client):
    agent = make_tenant("acme").agent_key(max_mailboxes=3)
    RecordingReceiver.fail_next = True
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "sales"})
    assert resp.status_code == 503 and resp.json["error"]["code"] == "provisioning_failed"
    assert resp.headers["retry-after"] == "7"
    assert Inbox.select().count() == 0
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 0
    retry = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "sales"})
    assert retry.status_code == 201 and retry.json["address"] == "sales@acme.agents.localhost"


def test_client_id_makes_creation_idempotent(client):
    agent = make_tenant("acme").agent_key(max_mailboxes=1)
    first = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"client_id": "job-42"})
    again = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"client_id": "job-42"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json == again.json
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 1  # the retry took no quota


def test_address_conflicts_and_domains(client):
    acme = make_tenant("acme")
    sub = "support.acme.agents.localhost"
    agent = acme.agent_key(domains=["acme.agents.localhost", sub])
    other = acme.agent_key(handle="other")
    assert client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "help"}).status_code == 201
    clash = client.simulate_post("/v1/inboxes", headers=auth(other), json={"username": "Help"})
    assert clash.status_code == 409 and clash.json["error"]["code"] == "address_taken"
    assert EnrollmentKey.get_by_id(other.enrollment.id).mailboxes_used == 0  # rolled back with the insert
    nested = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "help", "domain": sub.upper()})
    assert nested.status_code == 201 and nested.json["address"] == f"help@{sub}"
    denied = client.simulate_post("/v1/inboxes", headers=auth(other), json={"domain": sub})
    assert denied.status_code == 422 and denied.json["error"]["field"] == "domain"


def test_listing_pages_exactly(client):
    agent = make_tenant("acme").agent_key(max_mailboxes=7)
    made = [
        client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": f"b{i}"}).json["id"]
        for i in range(7)
    ]
    seen, token = [], None
    while True:
        query = "limit=3" + (f"&page_token={token}" if token else "")
        page = client.simulate_get("/v1/inboxes", headers=auth(agent), query_string=query).json
        seen += [i["id"] for i in page["data"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == made
    for bad in ("limit=0", "limit=201", "limit=x", "page_token=%%%", "page_token=WyJ4Il0"):
        resp = client.simulate_get("/v1/inboxes", headers=auth(agent), query_string=bad)
        assert resp.status_code == 422, bad
