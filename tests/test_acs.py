"""The acs send backend: the real azure-communication-email SDK, over TLS, against a
local endpoint that speaks and checks the ACS email REST protocol (support/acs.py)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.abc
import sys

import falcon.testing
import pytest
import trustme
from support.acs import API_VERSION, AcsEndpoint
from support.world import make_tenant

from postern.api import create_app
from postern.core.config import ConfigError
from postern.core.hookspecs import hookimpl
from postern.core.mail.confirm import confirm_due
from postern.core.mail.delivery import deliver_due
from postern.core.models import Message, utcnow
from postern.core.runtime import build_postern

KEY = b"an ACS access key, 32+ bytes long, any bytes will do"


class Outcomes:
    """Records the sent/failed hooks: they must fire once, when the outcome is known."""

    def __init__(self):
        self.events = []

    @hookimpl
    def postern_message_sent(self, message, result):
        self.events.append(("sent", message.id, result.backend_message_id))

    @hookimpl
    def postern_message_failed(self, message, error):
        self.events.append(("failed", message.id, error.code))


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("acs-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def acs(ca):
    endpoint = AcsEndpoint(KEY, senders={"alice@acme.agents.localhost", "donotreply@mail.example.org"})
    endpoint.start(ca)
    yield endpoint
    endpoint.stop()
    assert endpoint.refused == [] or endpoint.refused == ["signature does not match"]


@pytest.fixture
def world(db):
    acme = make_tenant("acme")
    return acme, acme.agent_key(handle="alice", max_mailboxes=5)


def connection_string(acs, key=KEY):
    return f"endpoint={acs.endpoint}/;accesskey={base64.b64encode(key).decode()}"


def make_client(config, acs, ca_file, **options):
    options = {"connection_string": connection_string(acs), "ca_file": ca_file, "poll_interval": 1, **options}
    config.roles["send"].backend = "acs"
    config.roles["send"].explicit = True
    config.roles["send"].options = {"acs": options}
    postern = build_postern(config)
    outcomes = Outcomes()
    postern.pm.register(outcomes)
    return falcon.testing.TestClient(create_app(postern)), postern, outcomes


def auth(agent):
    return {"Authorization": f"Bearer {agent.agent_key}"}


def send(client, agent, body, username="alice"):
    inbox = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": username}).json
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=auth(agent), json=body)
    assert resp.status_code == 201, resp.text
    return inbox, resp.json


def due_now(message_id):
    Message.update(next_attempt_at=utcnow()).where(Message.id == message_id).execute()


BODY = {"to": ["someone@example.org"], "subject": "hi", "text": "hello"}
#: Per connect/read, for tests where the endpoint hangs: the hang must time out, and the
#: requests after it (a TLS handshake to this process's endpoint) must not on a slow box.
REQUEST_TIMEOUT = 3


def test_send_is_confirmed_by_polling_from_the_outbox(config, world, acs, ca_file):
    client, postern, outcomes = make_client(config, acs, ca_file)
    _, agent = world
    pdf = b"%PDF-1.4 not really" * 20
    inbox, sent = send(
        client,
        agent,
        {
            "to": [{"address": "bob@example.org", "name": "Bob B"}],
            "cc": ["carol@example.org"],
            "bcc": ["dave@example.org"],
            "subject": "Plan",
            "text": "Shall we?",
            "html": "<p>Shall we?</p>",
            "headers": {"X-Agent-Run": "42"},
            "attachments": [
                {"filename": "plan.pdf", "content_type": "application/pdf", "content": base64.b64encode(pdf).decode()}
            ],
        },
    )
    # The API answered at once: ACS took it, its outcome is not known yet.
    assert sent["status"] == "sending" and outcomes.events == []
    row = Message.get_by_id(sent["id"])
    assert row.backend == "acs" and row.backend_message_id and row.accepted_at is not None
    [body] = acs.sends
    assert body["senderAddress"] == inbox["address"] == "alice@acme.agents.localhost"
    assert body["recipients"] == {
        "to": [{"address": "bob@example.org", "displayName": "Bob B"}],
        "cc": [{"address": "carol@example.org"}],
        "bcc": [{"address": "dave@example.org"}],
    }
    assert body["content"] == {"subject": "Plan", "plainText": "Shall we?", "html": "<p>Shall we?</p>"}
    [attachment] = body["attachments"]
    assert attachment["name"] == "plan.pdf" and attachment["contentType"] == "application/pdf"
    assert base64.b64decode(attachment["contentInBase64"]) == pdf
    assert body["headers"] == {"Message-ID": sent["message_id"], "X-Agent-Run": "42"}
    assert body["userEngagementTrackingDisabled"] is True and "replyTo" not in body
    assert acs.requests == [("POST", f"/emails:send?api-version={API_VERSION}")]

    # The first poll finds it Running; it stays sending, checked again later.
    assert confirm_due(postern) == 0  # not due yet: poll_interval is 1 s
    due_now(sent["id"])
    assert confirm_due(postern) == 1
    assert Message.get_by_id(sent["id"]).status == "sending" and outcomes.events == []
    due_now(sent["id"])
    assert confirm_due(postern) == 1
    final = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}", headers=auth(agent)).json
    assert final["status"] == "sent" and final["error"] is None
    assert outcomes.events == [("sent", sent["id"], row.backend_message_id)]
    status_path = f"/emails/operations/{row.backend_message_id}?api-version={API_VERSION}"
    assert acs.requests[1:] == [("GET", status_path), ("GET", status_path)]


def test_reply_carries_threading_headers(config, world, acs, ca_file):
    client, postern, _ = make_client(config, acs, ca_file)
    _, agent = world
    inbox, first = send(client, agent, BODY)
    reply = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{first['id']}/reply", headers=auth(agent), json={"text": "more"}
    ).json
    assert reply["status"] == "sending"
    headers = acs.sends[1]["headers"]
    assert headers["In-Reply-To"] == first["message_id"] and headers["References"] == first["message_id"]
    assert headers["Message-ID"] == reply["message_id"] != first["message_id"]


def test_fixed_sender_sets_reply_to_the_inbox(config, world, acs, ca_file):
    client, _, _ = make_client(config, acs, ca_file, sender_mode="fixed", sender="DoNotReply@mail.example.org")
    _, agent = world
    inbox, sent = send(client, agent, BODY, username="bob")  # bob's domain is not an ACS sender
    assert sent["status"] == "sending", sent["error"]
    [body] = acs.sends
    assert body["senderAddress"] == "DoNotReply@mail.example.org"
    assert body["replyTo"] == [{"address": inbox["address"]}]


def test_wrong_access_key_fails_for_good_with_acs_code(config, world, acs, ca_file):
    client, _, outcomes = make_client(config, acs, ca_file, connection_string=connection_string(acs, b"wrong" * 8))
    _, agent = world
    _, sent = send(client, agent, BODY)
    assert sent["status"] == "failed" and sent["error"].startswith("Denied: ACS send: HTTP 401 Denied")
    assert acs.refused == ["signature does not match"] and acs.sends == []
    assert outcomes.events == [("failed", sent["id"], "Denied")]


def test_throttled_send_waits_retry_after_then_succeeds(config, world, acs, ca_file):
    client, postern, _ = make_client(config, acs, ca_file)
    _, agent = world
    acs.script.append((429, {"Retry-After": "17"}, {"code": "TooManyRequests", "message": "slow down"}))
    before = utcnow()
    _, sent = send(client, agent, BODY)
    assert sent["status"] == "queued" and sent["attempts"] == 1 and "TooManyRequests" in sent["error"]
    wait = (Message.get_by_id(sent["id"]).next_attempt_at - before).total_seconds()
    assert 17 <= wait < 30  # ACS's Retry-After, not the first step of our own schedule (5 s)
    assert deliver_due(postern) == 0
    due_now(sent["id"])
    assert deliver_due(postern) == 1
    assert Message.get_by_id(sent["id"]).status == "sending" and len(acs.sends) == 1
    acs.polls_before_done = 0
    for _ in range(2):
        due_now(sent["id"])
        confirm_due(postern)
    assert Message.get_by_id(sent["id"]).status == "sent"


def test_invalid_sender_is_a_permanent_failure(config, world, acs, ca_file):
    client, postern, outcomes = make_client(config, acs, ca_file)
    _, agent = world
    _, sent = send(client, agent, BODY, username="mallory")  # not a sender ACS knows
    assert sent["status"] == "failed" and sent["error"].startswith("InvalidSenderUserName: ACS send: HTTP 400")
    assert outcomes.events == [("failed", sent["id"], "InvalidSenderUserName")]
    assert deliver_due(postern) == 0 and acs.sends == []


def test_unverified_domain_is_refused_before_calling_acs(config, world, acs, ca_file):
    client, _, _ = make_client(config, acs, ca_file, verified_domains=["mail.example.org"])
    _, agent = world
    _, sent = send(client, agent, BODY)
    assert sent["status"] == "failed" and sent["error"].startswith("sender_domain_not_verified:")
    assert acs.requests == []


def test_operation_that_ends_failed_fails_the_message(config, world, acs, ca_file):
    client, postern, outcomes = make_client(config, acs, ca_file)
    _, agent = world
    acs.polls_before_done = 0
    acs.outcome = ("Failed", {"code": "EmailDroppedAllRecipientsSuppressed", "message": "all suppressed"})
    inbox, sent = send(client, agent, BODY)
    due_now(sent["id"])
    assert confirm_due(postern) == 1
    final = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}", headers=auth(agent)).json
    assert final["status"] == "failed" and "all suppressed" in final["error"]
    assert final["error"].startswith("EmailDroppedAllRecipientsSuppressed:")
    assert outcomes.events == [("failed", sent["id"], "EmailDroppedAllRecipientsSuppressed")]


def test_silent_endpoint_times_out_and_is_retried(config, world, acs, ca_file):
    client, postern, _ = make_client(config, acs, ca_file, request_timeout=REQUEST_TIMEOUT)
    _, agent = world
    acs.hang = "before"
    _, sent = send(client, agent, BODY)
    assert sent["status"] == "queued" and sent["error"].startswith("ACS send: ServiceResponse")
    assert acs.sends == []
    acs.hang = None
    due_now(sent["id"])
    assert deliver_due(postern) == 1
    assert Message.get_by_id(sent["id"]).status == "sending" and len(acs.sends) == 1


def test_a_retry_after_a_lost_answer_never_sends_twice(config, world, acs, ca_file):
    client, postern, outcomes = make_client(config, acs, ca_file, request_timeout=REQUEST_TIMEOUT)
    _, agent = world
    acs.hang = "after"  # ACS takes the message, but its answer never arrives
    _, sent = send(client, agent, BODY)
    assert sent["status"] == "queued" and len(acs.sends) == 1
    acs.hang = None
    due_now(sent["id"])
    assert deliver_due(postern) == 1  # asks ACS about its operation id first: it exists
    assert Message.get_by_id(sent["id"]).status == "sending"
    assert [m for m, _ in acs.requests] == ["POST", "GET"] and len(acs.sends) == 1
    acs.polls_before_done = 0
    due_now(sent["id"])
    confirm_due(postern)
    assert Message.get_by_id(sent["id"]).status == "sent" and len(outcomes.events) == 1


def test_no_outcome_within_timeout_fails_and_says_so(config, world, acs, ca_file):
    client, postern, outcomes = make_client(config, acs, ca_file, timeout=60)
    _, agent = world
    acs.polls_before_done = 1000
    _, sent = send(client, agent, BODY)
    Message.update(accepted_at=utcnow() - dt.timedelta(seconds=61), next_attempt_at=utcnow()).where(
        Message.id == sent["id"]
    ).execute()
    assert confirm_due(postern) == 1
    row = Message.get_by_id(sent["id"])
    assert row.status == "failed" and row.error.startswith("acs_timeout:") and "may still be delivered" in row.error
    assert outcomes.events == [("failed", sent["id"], "acs_timeout")]


def test_the_sdk_own_poller_accepts_the_test_endpoint(acs, ca_file):
    """The endpoint's long-running-operation protocol is the one the SDK's poller follows,
    and a connection string's endpoint is made https by the SDK."""
    from azure.communication.email import EmailClient

    client = EmailClient.from_connection_string(
        connection_string(acs).replace("https://", ""), connection_verify=ca_file
    )
    message = {
        "senderAddress": "donotreply@mail.example.org",
        "recipients": {"to": [{"address": "x@example.org"}]},
        "content": {"subject": "s", "plainText": "t"},
    }
    assert client.begin_send(message, polling_interval=0).result()["status"] == "Succeeded"
    assert [m for m, _ in acs.requests] == ["POST", "GET", "GET"]


class BlockAzure(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ImportError(f"No module named '{name}' (blocked by the test)")
        return None


def test_without_the_sdk_choosing_acs_names_the_extra(config, acs, monkeypatch):
    for name in [n for n in sys.modules if n == "azure" or n.startswith("azure.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [BlockAzure(), *sys.meta_path])
    config.roles["send"].backend = "acs"
    config.roles["send"].options = {"acs": {"connection_string": connection_string(acs)}}
    with pytest.raises(ConfigError, match=r"\[send.acs\]: .*pip install 'postern\[acs\]'"):
        build_postern(config, open_db=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "set connection_string"),
        ({"connection_string": "endpoint=https://x.example;accesskey=s3cret!!"}, "not base64"),
        ({"connection_string": "accesskey=c2VjcmV0"}, "connection_string must look like"),
        ({"endpoint": "http://x.example", "access_key": "c2VjcmV0"}, "must be https"),
        ({"endpoint": "https://x.example", "access_key": "c2VjcmV0", "sender_mode": "fixed"}, "needs sender"),
        ({"endpoint": "https://x.example", "access_key": "c2VjcmV0", "sender_mode": "both"}, "sender_mode must"),
        (
            {"endpoint": "https://x.example", "access_key": "c2VjcmV0", "poll_interval": 0},
            "poll_interval must be a positive",
        ),
        ({"endpoint": "https://x.example", "access_key": "c2VjcmV0", "colour": "blue"}, "unknown option 'colour'"),
    ],
)
def test_bad_options_are_refused_at_start_without_quoting_secrets(config, options, message):
    config.roles["send"].backend = "acs"
    config.roles["send"].options = {"acs": options}
    with pytest.raises(ConfigError, match=message) as err:
        build_postern(config, open_db=False)
    assert str(err.value).startswith("[send.acs]: ")
    assert "s3cret" not in str(err.value) and "c2VjcmV0" not in str(err.value)


def test_dns_publishes_what_acs_needs_only_while_acs_sends(tmp_path, env, db):
    from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port, rdatas

    from postern.core import zones
    from postern.core.config import load_config

    acme = make_tenant("acme")
    apex, sales = acme.domain, f"sales.{acme.domain}"
    acme.agent_key(domains=[sales])
    path = tmp_path / "postern.toml"
    text = dns_config_text(free_udp_and_tcp_port())
    path.write_text(text)
    own = zones.build_zone(build_postern(load_config(path, environ=env)), apex, ensure_dkim=True)
    assert [r.rtype for r in own.records if "_domainkey" in r.name] == ["TXT"]  # Postern's own key
    assert not any("outlook" in r.value for r in own.records)

    path.write_text(
        text
        + '[send]\nbackend = "acs"\n[send.acs]\nendpoint = "https://acs.example"\naccess_key = "c2VjcmV0"\n'
        + f'domain_verification = {{ "{apex}" = "ms-domain-verification=0b1c" }}\n'
    )
    postern = build_postern(load_config(path, environ=env))
    zone = zones.build_zone(postern, apex)
    for domain in (apex, sales):
        assert [r.value for r in zone.at(domain) if r.value.startswith("v=spf1")] == [
            "v=spf1 include:spf.protection.outlook.com -all"
        ]
        for n in (1, 2):
            name = f"selector{n}-azurecomm-prod-net._domainkey.{domain}"
            assert [(r.rtype, r.value) for r in zone.at(name)] == [
                ("CNAME", f"selector{n}-azurecomm-prod-net._domainkey.azurecomm.net")
            ]
    assert not [r for r in zone.records if r.rtype == "TXT" and "_domainkey" in r.name]  # no Postern key
    assert "ms-domain-verification=0b1c" in [r.value for r in zone.at(apex)]
    assert "ms-domain-verification=0b1c" not in [r.value for r in zone.at(sales)]
    server = RunningDns(postern)
    try:
        answer = server.query(f"selector1-azurecomm-prod-net._domainkey.{sales}", "CNAME")
        assert rdatas(answer, "CNAME") == ["selector1-azurecomm-prod-net._domainkey.azurecomm.net."]
        assert '"ms-domain-verification=0b1c"' in rdatas(server.query(apex, "TXT"), "TXT")
    finally:
        server.stop()


def test_no_secret_reaches_the_logs(config, world, acs, ca_file, caplog):
    caplog.set_level("DEBUG")
    client, postern, _ = make_client(config, acs, ca_file, connection_string=connection_string(acs, b"wrong" * 8))
    _, agent = world
    _, sent = send(client, agent, BODY)
    text = caplog.text
    assert f"message {sent['id']} failed for good: ACS send: HTTP 401 Denied" in text
    for secret in (base64.b64encode(KEY).decode(), base64.b64encode(b"wrong" * 8).decode(), "Signature="):
        assert secret not in text
