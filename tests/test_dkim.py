"""DKIM end to end: mail the local relay sends is signed with the tenant's key, and
dkimpy verifies it with the public key fetched from Postern's own DNS server."""

from __future__ import annotations

import dkim
import dns.nameserver
import dns.resolver
import falcon.testing
import pytest
from support.backends import activate
from support.dns import RunningDns
from support.sink import relaying_config
from support.world import make_tenant

from postern.api import create_app
from postern.core.backends import DnsRecord
from postern.core.models import DkimKey, Message
from postern.plugins.smtp_local.sender import SmtpLocalSender

ACME = "acme.agents.localhost"


@pytest.fixture
def config(tmp_path, env, sink):
    return relaying_config(tmp_path, env, sink[1])


@pytest.fixture
def ns(postern):
    server = RunningDns(postern)
    yield server
    server.stop()


def txt_from(ns):
    """dkimpy's ``dnsfunc``: TXT lookups sent to Postern's DNS server over UDP."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port)]
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name)
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        return b"".join(answer.rrset[0].strings)

    return dnsfunc, asked


class Sender:
    """An agent with an inbox on the acme tenant, sending through the API."""

    def __init__(self, postern):
        self.client = falcon.testing.TestClient(create_app(postern))
        agent = make_tenant("acme").agent_key(handle="alice")
        self.headers = {"Authorization": f"Bearer {agent.agent_key}"}
        self.inbox = self.client.simulate_post("/v1/inboxes", headers=self.headers, json={}).json

    def send(self, subject="signed", to="someone@example.org") -> dict:
        body = {"to": [to], "subject": subject, "text": "hi"}
        resp = self.client.simulate_post(f"/v1/inboxes/{self.inbox['id']}/messages", headers=self.headers, json=body)
        assert resp.status_code == 201, resp.text
        return resp.json


def test_relayed_mail_verifies_against_postern_dns(postern, sink, ns):
    sent = Sender(postern).send()
    assert sent["status"] == "sent"
    [raw] = sink[0].raw
    assert raw.startswith(b"DKIM-Signature:")
    signature = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert f"d={ACME};" in signature and "s=postern;" in signature
    dnsfunc, asked = txt_from(ns)
    assert dkim.verify(raw, dnsfunc=dnsfunc) is True
    assert asked == [f"postern._domainkey.{ACME}.".encode()]  # the key came from our server
    tampered = raw.replace(b"Subject: signed", b"Subject: forged")
    assert dkim.verify(tampered, dnsfunc=dnsfunc) is False
    stored = Message.get_by_id(sent["id"]).raw
    assert not bytes(stored).startswith(b"DKIM-Signature")  # the store keeps what the agent sent


def test_a_key_sealed_with_another_secret_queues_the_mail_rather_than_send_it_unsigned(postern, sink):
    sender = Sender(postern)
    assert sender.send("first")["status"] == "sent"  # the key is sealed with the data_dir key
    postern.config.mail.dkim_key_secret = "another host's secret"  # a host set up differently
    second = sender.send("second")
    assert second["status"] == "queued" and "sealed with another key" in Message.get_by_id(second["id"]).error
    assert len(sink[0].received) == 1  # nothing left unsigned


class VendorRelay(SmtpLocalSender):
    """Relays like smtp_local, but the domain publishes a vendor's DKIM keys."""

    name = "vendor_relay"

    def dkim_records(self, postern, domain):
        return [DnsRecord(f"sel1._domainkey.{domain}", "CNAME", "sel1.vendor.example")]


def test_no_signature_when_the_send_backend_publishes_its_own_dkim(postern, sink):
    vendor = activate(postern, VendorRelay, smarthost=f"127.0.0.1:{sink[1]}", starttls=False)
    assert Sender(vendor).send()["status"] == "sent"
    [raw] = sink[0].raw
    assert not raw.startswith(b"DKIM-Signature:") and DkimKey.select().count() == 0
