"""Webhook destinations against every IANA special-purpose address range (hardening issue,
item 4), at registration (the API) and at connect time (the resolver check the
dispatcher runs on every attempt), and IPv6 transition forms judged by the IPv4 address
they carry."""

from __future__ import annotations

import ipaddress
import struct

import falcon.testing
import pytest
from support.world import make_tenant
from test_webhooks import deliveries, drain, mail, new_inbox

from postern.api import create_app
from postern.core.runtime import build_postern
from postern.core.webhooks import destinations

# The registries as IANA publishes them (name, range, "Globally Reachable"), written out
# here independently of postern/core/webhooks/public_ip.py. None: N/A in the registry
# (deprecated, or a form carrying IPv4, tested below).
IPV4_REGISTRY = [
    ("this network", "0.0.0.0/8", False),
    ("private-use", "10.0.0.0/8", False),
    ("shared address space", "100.64.0.0/10", False),
    ("loopback", "127.0.0.0/8", False),
    ("link local", "169.254.0.0/16", False),
    ("private-use", "172.16.0.0/12", False),
    ("IETF protocol assignments", "192.0.0.0/24", False),
    ("IPv4 service continuity prefix", "192.0.0.0/29", False),
    ("IPv4 dummy address", "192.0.0.8/32", False),
    ("port control protocol anycast", "192.0.0.9/32", True),
    ("TURN anycast", "192.0.0.10/32", True),
    ("NAT64/DNS64 discovery", "192.0.0.170/32", False),
    ("NAT64/DNS64 discovery", "192.0.0.171/32", False),
    ("documentation TEST-NET-1", "192.0.2.0/24", False),
    ("AS112-v4", "192.31.196.0/24", True),
    ("AMT", "192.52.193.0/24", True),
    ("deprecated 6to4 relay anycast", "192.88.99.0/24", None),
    ("private-use", "192.168.0.0/16", False),
    ("direct delegation AS112", "192.175.48.0/24", True),
    ("benchmarking", "198.18.0.0/15", False),
    ("documentation TEST-NET-2", "198.51.100.0/24", False),
    ("documentation TEST-NET-3", "203.0.113.0/24", False),
    ("reserved", "240.0.0.0/4", False),
    ("limited broadcast", "255.255.255.255/32", False),
    ("multicast (not in the registry)", "224.0.0.0/4", False),
]
IPV6_REGISTRY = [
    ("loopback", "::1/128", False),
    ("unspecified", "::/128", False),
    ("IPv4-mapped", "::ffff:0:0/96", None),
    ("IPv4-IPv6 translation", "64:ff9b::/96", None),
    ("IPv4-IPv6 translation, local use", "64:ff9b:1::/48", False),
    ("discard-only", "100::/64", False),
    ("dummy IPv6 prefix", "100:0:0:1::/64", False),
    ("IETF protocol assignments", "2001::/23", False),
    ("Teredo", "2001::/32", None),
    ("PCP anycast", "2001:1::1/128", True),
    ("TURN anycast", "2001:1::2/128", True),
    ("DNS-SD SRP anycast", "2001:1::3/128", True),
    ("benchmarking", "2001:2::/48", False),
    ("AMT", "2001:3::/32", True),
    ("AS112-v6", "2001:4:112::/48", True),
    ("deprecated ORCHID", "2001:10::/28", None),
    ("ORCHIDv2", "2001:20::/28", True),
    ("drone remote ID DETs", "2001:30::/28", True),
    ("documentation", "2001:db8::/32", False),
    ("6to4", "2002::/16", None),
    ("direct delegation AS112", "2620:4f:8000::/48", True),
    ("documentation", "3fff::/20", False),
    ("segment routing SIDs", "5f00::/16", False),
    ("unique-local", "fc00::/7", False),
    ("link-local unicast", "fe80::/10", False),
    ("deprecated site-local (not in the registry)", "fec0::/10", None),
    ("6bone, returned (not in the registry)", "3ffe::/16", None),
    ("multicast (not in the registry)", "ff00::/8", False),
]
PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "93.184.215.14"]
PUBLIC_V6 = ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


def most_specific(address: str, registry) -> tuple[str, str, bool | None] | None:
    ip = ipaddress.ip_address(address)
    holding = [row for row in registry if ip in ipaddress.ip_network(row[1])]
    return max(holding, key=lambda row: ipaddress.ip_network(row[1]).prefixlen, default=None)


def samples(registry) -> list[tuple[str, str]]:
    """(address, row name) for the first, second and last address of every row whose own
    verdict is known, when that row is the most specific one holding the address."""
    found = []
    for name, cidr, reachable in registry:
        net = ipaddress.ip_network(cidr)
        for ip in {net.network_address, net.network_address + min(1, net.num_addresses - 1), net[-1]}:
            if reachable is not None and most_specific(str(ip), registry)[1] == cidr:
                found.append((str(ip), f"{name} {cidr}"))
    return found


V4_SAMPLES = samples(IPV4_REGISTRY)
V6_SAMPLES = samples(IPV6_REGISTRY)


def expected(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    row = most_specific(address, IPV4_REGISTRY if ip.version == 4 else IPV6_REGISTRY)
    return True if row is None else bool(row[2])


# IPv6 forms that carry an IPv4 address, each as a function of that address.
def _v6(prefix_bits: int, shift: int, v4: str) -> str:
    return str(ipaddress.IPv6Address(prefix_bits | int(ipaddress.IPv4Address(v4)) << shift))


def teredo(server: str, client: str) -> str:
    """RFC 4380: 2001:0::/32, server IPv4, flags, port and client IPv4 both obfuscated."""
    packed = struct.pack(
        "!4s4sHH4s",
        bytes.fromhex("20010000"),
        ipaddress.IPv4Address(server).packed,
        0x8000,
        0xFFFF ^ 40000,
        bytes(b ^ 0xFF for b in ipaddress.IPv4Address(client).packed),
    )
    return str(ipaddress.IPv6Address(packed))


CARRIERS = {
    "IPv4-mapped": lambda v4: _v6(0xFFFF << 32, 0, v4),
    "IPv4-translated": lambda v4: _v6(0xFFFF << 48, 0, v4),
    "IPv4-compatible": lambda v4: _v6(0, 0, v4),
    "NAT64 64:ff9b::/96": lambda v4: _v6(0x64FF9B << 96, 0, v4),
    "6to4": lambda v4: _v6(0x2002 << 112 | 1, 80, v4),
    "Teredo client": lambda v4: teredo("8.8.8.8", v4),
    "Teredo server": lambda v4: teredo(v4, "8.8.8.8"),
}
CARRIED = [(v4, name) for v4, name in V4_SAMPLES] + [(v4, "public") for v4 in PUBLIC_V4]


def literal_url(address: str) -> str:
    return f"http://[{address}]:8080/hook" if ":" in address else f"http://{address}:8080/hook"


def register(client, agent, address: str) -> bool:
    """Whether the API (the shared ``client``: default config, allow_destinations empty)
    accepts a webhook to ``address`` (deleting it again, so the enrollment's cap on
    webhooks is never reached)."""
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    body = {"url": literal_url(address), "event_types": ["message.received"]}
    resp = client.simulate_post("/v1/webhooks", headers=headers, json=body)
    if resp.status_code == 201:
        assert client.simulate_delete(f"/v1/webhooks/{resp.json['id']}", headers=headers).status_code == 204
        return True
    assert resp.status_code == 422 and resp.json["error"]["code"] == "destination_refused", resp.text
    return False


def connects(address: str, allow: list[str] | None = None) -> bool:
    """Whether the connect-time check lets the dispatcher connect to ``address``."""
    target = destinations.parse(literal_url(address))
    try:
        resolved = destinations.resolve(target, allow or [])
        return [ipaddress.ip_address(a) for a in resolved] == [ipaddress.ip_address(address)]
    except destinations.DestinationRefused:
        return False


def test_the_table_covers_the_registries():
    assert len(V4_SAMPLES) >= 50 and len(V6_SAMPLES) >= 50
    assert {expected(a) for a, _ in V4_SAMPLES} == {True, False} == {expected(a) for a, _ in V6_SAMPLES}


def test_every_special_purpose_range_at_registration(client):
    agent = make_tenant("acme").agent_key()
    wrong = [
        (name, address, want)
        for address, name in [*V4_SAMPLES, *V6_SAMPLES, *((a, "public") for a in PUBLIC_V4 + PUBLIC_V6)]
        if register(client, agent, address) != (want := expected(address))
    ]
    assert wrong == []


def test_every_special_purpose_range_at_connect_time():
    wrong = [
        (name, address, want)
        for address, name in [*V4_SAMPLES, *V6_SAMPLES, *((a, "public") for a in PUBLIC_V4 + PUBLIC_V6)]
        if connects(address) != (want := expected(address))
    ]
    assert wrong == []


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(client, carrier):
    agent = make_tenant("acme").agent_key()
    wrong = []
    for v4, name in CARRIED:
        address = CARRIERS[carrier](v4)
        want = expected(v4)
        if carrier == "IPv4-compatible" and v4.startswith("0.0.0."):
            want = False  # :: and ::1 themselves
        if register(client, agent, address) != want or connects(address) != want:
            wrong.append((name, v4, address, want))
    assert wrong == []


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::7f00:1",
        "64:ff9b:1:7f00:0:100::",  # 127.0.0.1 where a /48 NAT64 prefix puts it
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",  # 6to4 of the cloud metadata address
        "::127.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:0:127.0.0.1",
        "::ffff:0:a9fe:a9fe",
        "fec0::1",
        "feff:ffff::1",
        "3ffe::1",
        "2001:10::1",
        "5f00::1",
    ],
)
def test_review_findings_are_refused_at_registration_and_connect_time(client, address):
    agent = make_tenant("acme").agent_key()
    assert not register(client, agent, address)
    assert not connects(address)


def test_the_operators_allowance_still_reaches_what_it_names(config, db):
    """``allow_destinations`` of an IPv4 network covers that network's IPv6 forms; of an
    IPv6 network, that network."""
    assert connects("64:ff9b::127.0.0.1", ["127.0.0.0/8"]) and connects("::ffff:127.0.0.1", ["127.0.0.0/8"])
    assert connects("fd00::1", ["fd00::/8"]) and not connects("fd00::1", ["127.0.0.0/8"])
    assert not connects("2002:7f00:1::", ["10.0.0.0/8"])


def test_the_dispatcher_refuses_a_transition_form_at_connect_time(config, db):
    """Saved while the operator allowed loopback; the policy then changed: the attempt is
    refused before any connection, with the reason recorded."""
    config.webhooks.allow_destinations = ["127.0.0.0/8"]
    config.webhooks.retry_schedule = [1, 1]
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    agent = make_tenant("acme").agent_key()
    inbox = new_inbox(client, agent)
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    body = {"url": "http://[64:ff9b::127.0.0.1]:9/hook", "event_types": ["message.received"]}
    assert client.simulate_post("/v1/webhooks", headers=headers, json=body).status_code == 201
    postern.config.webhooks.allow_destinations = []
    mail(postern, inbox)
    drain(postern)
    [row] = deliveries()
    assert row.status == "pending" and "resolves to a non-public address (64:ff9b::7f00:1)" in row.last_error
