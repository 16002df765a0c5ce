# ruff: noqa: F811  (the lab's fixtures are imported by name, then requested as arguments)
"""``[send.smtp_local] mode = "direct"`` end to end: sends through the API, the outbox's
retries and the per-recipient outcomes, against real MXes on loopback addresses found
through real DNS (tests/support/mxlab.py)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import falcon.testing
import pytest
from support.mxlab import ca, ca_file, mx, port, smtp, sts, zone  # noqa: F401  (fixtures)
from support.world import make_tenant

from postern.api import create_app
from postern.core.config import ConfigError
from postern.core.mail.delivery import deliver_due
from postern.core.mail.outcome import outbound_mode
from postern.core.models import Message, Suppression, utcnow
from postern.core.runtime import build_postern


@pytest.fixture
def direct(config, db, zone, port, ca_file):
    def start(**options):
        config.roles["send"].options = {
            "smtp_local": {
                "mode": "direct",
                "helo": "out.postern.test",
                "resolver": zone.address,
                "mx_port": port,
                "ca_file": ca_file,
                "timeout": 3,
                "dns_cache": False,  # the lab's zones change within a test
                **options,
            }
        }
        postern = build_postern(config)
        acme = make_tenant("acme")
        agent = acme.agent_key(handle="bot", max_mailboxes=5)
        client = falcon.testing.TestClient(create_app(postern))
        headers = {"Authorization": f"Bearer {agent.agent_key}"}
        inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "alice"}).json
        return postern, client, headers, inbox, acme

    return start


def send(client, headers, inbox, *to):
    body = {"to": list(to), "subject": "direct", "text": "hello"}
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json


def statuses(message) -> dict[str, str]:
    return {r["address"]: r["status"] for r in message["recipients"]}


def get(client, headers, inbox, message_id):
    return client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{message_id}", headers=headers).json


def due_now(message_id):
    Message.update(next_attempt_at=utcnow()).where(Message.id == message_id).execute()


def test_mail_to_two_domains_is_delivered_to_each_mx_and_greylisting_clears_on_retry(direct, zone, smtp):
    mx(zone, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    mx(zone, "grey.test", (10, "mx.grey.test", "127.0.0.3"))
    seen: set[str] = set()

    def greylist(address):
        if address in seen:
            return "250 OK"
        seen.add(address)
        return "451 4.7.1 greylisted, try again later"

    ok, grey = smtp("127.0.0.2"), smtp("127.0.0.3", rcpt=greylist)
    postern, client, headers, inbox, _ = direct(retry_minutes=[7])
    first = send(client, headers, inbox, "bob@ok.test", "carol@grey.test")
    assert first["status"] == "queued" and first["left_server"] is False
    assert statuses(first) == {"bob@ok.test": "sent", "carol@grey.test": "deferred"}
    row = Message.get_by_id(first["id"])
    wait = row.next_attempt_at - utcnow()
    assert dt.timedelta(minutes=6) < wait <= dt.timedelta(minutes=7)  # retry_minutes, not the relay schedule
    [(to_ok)] = ok.messages
    assert to_ok.sender == f"bounce-{first['id']}@acme.agents.localhost" and to_ok.rcpts == ["bob@ok.test"]
    assert b"Subject: direct" in to_ok.content
    assert to_ok.content.startswith(b"DKIM-Signature:") and b"d=acme.agents.localhost;" in to_ok.content

    due_now(first["id"])
    assert deliver_due(postern) == 1
    done = get(client, headers, inbox, first["id"])
    assert done["status"] == "sent" and statuses(done) == {"bob@ok.test": "sent", "carol@grey.test": "sent"}
    assert len(ok.messages) == 1  # bob is never sent it twice
    assert [m.rcpts for m in grey.messages] == [["carol@grey.test"]]


def test_an_unknown_user_bounces_and_is_suppressed(direct, zone, smtp):
    mx(zone, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    smtp("127.0.0.2", rcpt=lambda a: "550 5.1.1 no such user" if a.startswith("nobody") else "250 OK")
    postern, client, headers, inbox, acme = direct()
    message = send(client, headers, inbox, "nobody@ok.test")
    assert message["status"] == "failed" and statuses(message) == {"nobody@ok.test": "bounced"}
    [row] = Suppression.select()
    assert (row.address, row.reason, row.customer_id) == ("nobody@ok.test", "bounce", acme.customer.id)


def test_a_domain_with_null_mx_bounces_without_a_connection(direct, zone):
    zone.add("null.test", "MX", "0 .")
    postern, client, headers, inbox, _ = direct()
    message = send(client, headers, inbox, "x@null.test")
    assert message["status"] == "failed"
    assert message["recipients"][0]["code"] == "null_mx"


def test_enforced_mta_sts_without_tls_defers_and_sends_nothing(direct, zone, smtp, sts):
    mx(zone, "sts.test", (10, "mx.sts.test", "127.0.0.9"))
    server = smtp("127.0.0.9")  # offers no STARTTLS
    policy = sts("sts.test", "enforce", "mx.sts.test")
    postern, client, headers, inbox, _ = direct(mta_sts_port=policy.port)
    message = send(client, headers, inbox, "x@sts.test")
    assert message["status"] == "queued" and statuses(message) == {"x@sts.test": "deferred"}
    assert message["recipients"][0]["code"] == "mta_sts"
    assert server.messages == [] and policy.hits == 1


def test_deferred_recipients_fail_once_the_queue_lifetime_is_over(direct, zone, smtp):
    mx(zone, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    mx(zone, "grey.test", (10, "mx.grey.test", "127.0.0.3"))
    smtp("127.0.0.2")
    smtp("127.0.0.3", rcpt=lambda a: "451 4.3.0 try later")
    postern, client, headers, inbox, _ = direct(queue_lifetime_hours=1)
    message = send(client, headers, inbox, "bob@ok.test", "carol@grey.test")
    assert message["status"] == "queued"
    Message.update(received_at=utcnow() - dt.timedelta(hours=2), next_attempt_at=utcnow()).where(
        Message.id == message["id"]
    ).execute()
    assert deliver_due(postern) == 1
    done = get(client, headers, inbox, message["id"])
    assert done["status"] == "sent"  # bob got it
    assert statuses(done) == {"bob@ok.test": "sent", "carol@grey.test": "failed"}
    assert done["error"].startswith("expired: ")


def test_direct_mode_refuses_a_smarthost_and_bad_schedules(config, db):
    for options, words in (
        ({"mode": "direct", "smarthost": "relay.example:25"}, "remove smarthost"),
        ({"mode": "direct", "retry_minutes": []}, "retry_minutes"),
        ({"mode": "relay"}, "needs a smarthost"),
        ({"mode": "bulk"}, 'mode must be "direct"'),
    ):
        config.roles["send"].options = {"smtp_local": options}
        with pytest.raises((ConfigError, ValueError)) as refused:
            build_postern(config).backend("send")
        assert words in str(refused.value)


def test_doctor_checks_the_reverse_dns_of_the_sending_address(config, db, zone):
    def findings(**options):
        base = {"mode": "direct", "helo": "out.postern.test", "resolver": zone.address}
        config.roles["send"].options = {"smtp_local": {**base, **options}}
        return build_postern(config).backend("send").probe(None, 3)

    [unset] = findings()
    assert unset.status == "WARN" and "source_address" in unset.detail
    [no_ptr] = findings(source_address="192.0.2.7")
    assert no_ptr.status == "WARN" and "no PTR record" in no_ptr.detail and "out.postern.test" in no_ptr.fix
    zone.add("7.2.0.192.in-addr.arpa", "PTR", "mail.elsewhere.test.")
    [wrong] = findings(source_address="192.0.2.7")
    assert wrong.status == "WARN" and "names mail.elsewhere.test, not out.postern.test" in wrong.detail
    zone.records[("7.2.0.192.in-addr.arpa", "PTR")] = ["out.postern.test."]
    [one_way] = findings(source_address="192.0.2.7")
    assert one_way.status == "WARN" and "does not resolve back" in one_way.detail
    zone.add("out.postern.test", "A", "192.0.2.7")
    [good] = findings(source_address="192.0.2.7")
    assert good.status == "OK" and "forward-confirmed" in good.detail


def test_health_and_plugins_say_mail_leaves_directly(direct):
    postern, client, headers, inbox, _ = direct()
    outbound = client.simulate_get("/healthz").json["outbound"]
    assert outbound["mode"] == "direct" and outbound["backend"] == "smtp_local"
    assert outbound_mode(postern).route == "direct delivery to each recipient domain's MX"


def test_a_hanging_mx_holds_one_outbox_thread_not_the_queue(direct, zone, smtp, port):
    mx(zone, "slow.test", (10, "mx.slow.test", "127.0.0.8"))
    mx(zone, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    silent = socket.create_server(("127.0.0.8", port))  # takes connections, never says a word
    ok = smtp("127.0.0.2")
    postern, client, headers, inbox, _ = direct(timeout=2, deadline=4)
    try:
        slow_id = send(client, headers, inbox, "x@slow.test")["id"]  # its first attempt: deferred
        ok_id = Message.get_by_id(send(client, headers, inbox, "y@ok.test")["id"]).id
        assert len(ok.messages) == 1
        Message.update(status="queued", next_attempt_at=utcnow() - dt.timedelta(seconds=10)).where(
            Message.id == slow_id
        ).execute()  # the hanging one is due first
        Message.update(status="queued", next_attempt_at=utcnow()).where(Message.id == ok_id).execute()
        from postern.core.models import MessageRecipient

        MessageRecipient.update(status="queued").where(MessageRecipient.message == ok_id).execute()
        sweep = threading.Thread(target=deliver_due, args=(postern,))
        sweep.start()
        deadline = time.monotonic() + 10
        while len(ok.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        still_held = Message.get_by_id(slow_id).claimed_until is not None
        sweep.join(15)
        assert len(ok.messages) == 2 and still_held  # delivered while the hanging attempt was under way
        assert Message.get_by_id(slow_id).status == "queued" and Message.get_by_id(ok_id).status == "sent"
    finally:
        silent.close()


def test_outbox_threads_is_checked(tmp_path):
    from postern.core.config import load_config

    path = tmp_path / "postern.toml"
    path.write_text("[mail]\noutbox_threads = 0\n")
    with pytest.raises(ConfigError, match="outbox_threads must be from 1 to 64"):
        load_config(path, environ={"POSTERN_DATA_DIR": str(tmp_path)})
