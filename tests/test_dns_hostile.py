"""dns_builtin against hostile and broken input: every bad packet gets FORMERR or
nothing, and the next good query is answered correctly, over real sockets."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time

import dns.message
import dns.query
import dns.rcode
import pytest
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port, rdatas
from support.server import wait_for
from support.world import make_tenant

from postern.core.config import ConfigError, load_config
from postern.core.runtime import build_postern

BASE = "agents.localhost"
ACME = f"acme.{BASE}"
MX = [f"10 mail.{BASE}."]


def running_ns(tmp_path, env, idle_timeout: int, max_tcp_connections: int = 4):
    path = tmp_path / "postern.toml"
    extra = f"tcp_idle_timeout = {idle_timeout}\nmax_tcp_connections = {max_tcp_connections}\n"
    path.write_text(dns_config_text(free_udp_and_tcp_port(), extra))
    postern = build_postern(load_config(path, environ=env))
    make_tenant("acme")
    return RunningDns(postern)


@pytest.fixture
def ns(tmp_path, env, db):
    server = running_ns(tmp_path, env, idle_timeout=1)
    yield server
    server.stop()


@pytest.fixture
def patient_ns(tmp_path, env, db):
    """Idle TCP connections are kept for a minute, not a second: a test holding some
    open while it checks something else cannot have them cut meanwhile."""
    server = running_ns(tmp_path, env, idle_timeout=60)
    yield server
    server.stop()


def good_query(qid: int = 0x1234) -> bytes:
    query = dns.message.make_query(ACME, "MX")
    query.id = qid
    return query.to_wire()


def header(qid=0xBEEF, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def exchange(ns, packet: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (ns.host, ns.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def still_serving(ns) -> None:
    for tcp in (False, True):
        response = ns.query(ACME, "MX", tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR and rdatas(response, "MX") == MX


def pointer_chain(questions: int) -> bytes:
    """Questions whose names each point at the previous one: RecursionError in dnslib."""
    body = b"\x01a\x00\x00\x01\x00\x01"
    offsets = [12]
    for _ in range(questions - 1):
        offsets.append(12 + len(body))
        body += struct.pack(">H", 0xC000 | offsets[-2]) + b"\x00\x01\x00\x01"
    return header(qd=questions) + body


HOSTILE = {
    "self_pointer_loop": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer_forward": header() + b"\xc0\x20\x00\x01\x00\x01",
    "pointer_chain_1200": pointer_chain(1200),
    "label_longer_than_packet": header() + b"\x3facme\x00\x00\x01\x00\x01",
    "label_length_64": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name_over_255": header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    "question_cut_short": header() + b"\x04acme",
    "no_question": header(qd=0),
    "two_questions": header(qd=2) + (b"\x04acme\x00\x00\x01\x00\x01") * 2,
    "counts_lie": header(qd=1, an=40, ns=40, ar=40) + b"\x04acme\x00\x00\x01\x00\x01",
    "bad_opt_length": dns.message.make_query(ACME, "MX", use_edns=0).to_wire()[:-2] + b"\xff\xff",
    "reserved_label_type": header() + b"\x80acme\x00\x00\x01\x00\x01",
}


@pytest.mark.parametrize("packet", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_packet_gets_formerr_or_nothing(ns, packet):
    reply = exchange(ns, packet)
    if reply is not None:
        assert reply[:2] == packet[:2] and reply[2] & 0x80  # our ID, and a reply
        assert reply[3] & 0x0F == dns.rcode.FORMERR
        assert reply[6:8] == b"\x00\x00"  # never an answer
    still_serving(ns)


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x00", b"\x12\x34\x01", b"\xff" * 11, good_query()[:12].replace(b"\x01\x00", b"\x81\x00", 1)],
    ids=["empty", "one_byte", "three_bytes", "short_header", "a_reply"],
)
def test_no_reply_without_a_header_or_to_a_reply(ns, packet):
    assert exchange(ns, packet) is None
    still_serving(ns)


def test_other_opcodes_are_not_implemented(ns):
    update = bytearray(good_query())
    update[2] = (update[2] & 0x87) | (5 << 3)  # opcode UPDATE
    reply = exchange(ns, bytes(update), timeout=15)  # a reply is due: wait for it
    assert reply[:2] == update[:2] and reply[2] == 0x80 | (5 << 3) | (update[2] & 1)  # QR, opcode kept
    assert reply[3] & 0x0F == dns.rcode.NOTIMP
    still_serving(ns)


def test_thousands_of_random_and_mutated_packets(ns):
    rng = random.Random(20261123)
    seeds = [
        dns.message.make_query(name, rtype, use_edns=rng.choice([None, 0])).to_wire()
        for name in (ACME, f"x.{ACME}", f"postern._domainkey.{ACME}", "example.com", f"nosuch.{BASE}")
        for rtype in ("A", "MX", "TXT", "SOA", "ANY")
    ]
    packets = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))) for _ in range(1500)]
    for _ in range(3500):
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            action = rng.randrange(4)
            position = rng.randrange(len(packet)) if packet else 0
            if action == 0 and packet:
                packet[position] = rng.getrandbits(8)  # flip a byte
            elif action == 1:
                packet = packet[:position]  # truncate
            elif action == 2:
                packet[position:position] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 8)))
            elif packet:
                packet[position : position + 2] = b"\xc0" + bytes([rng.choice([12, position & 0xFF])])
        packets.append(bytes(packet))

    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for start in range(0, len(packets), 50):
            for packet in packets[start : start + 50]:
                sock.sendto(packet, (ns.host, ns.port))
            # Let the server keep up (this is about robustness, not load): it answers in
            # the order packets come, so once a good query sent after these is answered,
            # each of these has its answer (or none) waiting here, and nothing was dropped
            # from a full buffer however slow the box.
            replies += _until_probe_answered(sock, ns, probe=start // 50)
    assert len(replies) > 1000  # most mutations still carry a header, and get an answer
    for reply in replies:
        assert reply[2] & 0x80 and len(reply) >= 12  # every reply is a reply
    still_serving(ns)
    for packet in packets[:300:7]:  # and over TCP, one connection each
        with socket.create_connection((ns.host, ns.port), timeout=30) as conn:
            conn.sendall(struct.pack(">H", len(packet)) + packet)
            conn.shutdown(socket.SHUT_WR)
            # Until the server has closed it: connections left in its accept queue
            # would take the 4 places (the cap) from the query below, which is refused.
            with contextlib.suppress(ConnectionResetError):
                while conn.recv(65535):
                    pass
    assert ns.server.tcp_connections == 0
    still_serving(ns)


def _until_probe_answered(sock, ns, probe: int) -> list[bytes]:
    """Every datagram that arrives on ``sock`` until the answer to a probe query (of
    its own name and id), which is not returned."""
    query = dns.message.make_query(f"probe-{probe}.{ACME}", "A")
    query.id = probe
    sock.sendto(query.to_wire(), (ns.host, ns.port))
    sock.settimeout(30)
    found = []
    while True:
        data = sock.recv(65535)
        try:
            reply = dns.message.from_wire(data)
            if reply.id == query.id and reply.question == query.question:
                return found
        except Exception:  # noqa: BLE001 (replies to mutated packets need not parse)
            pass
        found.append(data)


def test_a_silent_or_slow_tcp_client_is_cut_off(ns):
    started = time.monotonic()
    with socket.create_connection((ns.host, ns.port), timeout=30) as conn:
        conn.sendall(b"\x00\xff\x00")  # promises 255 bytes, sends one
        assert conn.recv(10) == b""  # closed by the server after its 1 s idle timeout
    # Given its idle second, then cut off: by the server, long before this client's own
    # 30 s timeout (an upper bound a loaded box cannot break, unlike the old 4 s).
    assert 0.9 <= time.monotonic() - started < 15
    still_serving(ns)


def test_tcp_connections_are_capped_and_freed(patient_ns):
    """With every slot taken, a new connection is served and the one that waited longest
    for a query is closed: the count never goes over the cap."""
    ns = patient_ns
    hogs = []
    try:
        for _ in range(4):
            hogs.append(socket.create_connection((ns.host, ns.port), timeout=30))
            wait_for(lambda: ns.server.tcp_connections == len(hogs), timeout=30, interval=0.02)
        response = ns.query(ACME, "MX", tcp=True)  # a fifth client, over the cap of 4
        assert response.rcode() == dns.rcode.NOERROR and rdatas(response, "MX") == MX
        assert closed_by_server(hogs[0])  # the oldest made room
        assert ns.server.tcp_closed_for_room == 1 and ns.server.tcp_connections <= 4
        assert ns.query(ACME, "MX").rcode() == dns.rcode.NOERROR  # UDP is unaffected
    finally:
        for hog in hogs:
            hog.close()
    wait_for(lambda: ns.server.tcp_connections == 0, timeout=30, interval=0.02)  # freed
    still_serving(ns)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True  # aborted: the kernel says so with a reset


def test_many_clients_holding_every_tcp_slot_do_not_lock_out_a_new_one(tmp_path, env, db):
    """Many clients each within their share can still take every slot together; a new
    client's query is answered anyway, by closing the connection idle longest."""
    ns = running_ns(tmp_path, env, idle_timeout=60, max_tcp_connections=8)
    hogs = []
    try:
        for i in range(8):
            hogs.append(socket.create_connection((ns.host, ns.port), timeout=30, source_address=(f"127.0.1.{i}", 0)))
        wait_for(lambda: ns.server.tcp_connections == 8, timeout=30, interval=0.02)
        query = dns.message.make_query(ACME, "MX")
        response = dns.query.tcp(query, ns.host, port=ns.port, timeout=10, source="127.0.0.2")
        assert response.rcode() == dns.rcode.NOERROR and rdatas(response, "MX") == MX
        assert ns.server.tcp_connections <= 8
    finally:
        for hog in hogs:
            hog.close()
        ns.stop()


def test_one_client_holding_tcp_connections_leaves_room_for_others(tmp_path, env, db):
    """The review's finding: one client holding every TCP slot locked the others out for
    the idle timeout. With the default share (32 per client), a client opening all 64
    slots is given 32, and another client's TCP query is answered at once."""
    ns = running_ns(tmp_path, env, idle_timeout=60, max_tcp_connections=64)
    hogs = []
    try:
        for _ in range(64):
            hogs.append(socket.create_connection((ns.host, ns.port), timeout=30))
        # The server accepts in arrival order: the hogs' connections are taken (or refused)
        # before the other client's, which connects after all 64 were established.
        wait_for(lambda: ns.server.tcp_connections >= 32, timeout=30, interval=0.02)
        started = time.monotonic()
        query = dns.message.make_query(ACME, "MX")
        response = dns.query.tcp(query, ns.host, port=ns.port, timeout=10, source="127.0.0.2")
        assert response.rcode() == dns.rcode.NOERROR and rdatas(response, "MX") == MX
        assert time.monotonic() - started < 10  # answered, not after the hogs' 60 s idle timeout
        assert ns.server.tcp_connections <= 33  # the hog was held to its share (32), plus ours
    finally:
        for hog in hogs:
            hog.close()
        ns.stop()


def test_per_client_tcp_share_is_configurable(tmp_path, env):
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(free_udp_and_tcp_port(), "max_tcp_connections_per_client = 3\n"))
    assert build_postern(load_config(path, environ=env)).backend("dns").options.max_tcp_connections_per_client == 3
    path.write_text(dns_config_text(free_udp_and_tcp_port(), "max_tcp_connections_per_client = 0\n"))
    with pytest.raises((ConfigError, ValueError), match="max_tcp_connections_per_client"):
        build_postern(load_config(path, environ=env))


def test_several_queries_on_one_tcp_connection(ns):
    with socket.create_connection((ns.host, ns.port), timeout=5) as conn:
        for qid in (1, 2, 3):
            conn.sendall(struct.pack(">H", len(good_query(qid))) + good_query(qid))
        for qid in (1, 2, 3):
            length = struct.unpack(">H", _recv_exactly(conn, 2))[0]
            reply = dns.message.from_wire(_recv_exactly(conn, length))
            assert reply.id == qid and rdatas(reply, "MX") == MX


def _recv_exactly(conn, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('bind = "nowhere"', "bind must be host:port"),
        ('ns1_addresses = ["ten.0.0.1"]', "not an IP address"),
        ('resolvers = ["1.1.1.1:dns"]', "is not ip or ip:port"),
        ("max_udp_payload = 100", "max_udp_payload must be from 512"),
        ("colour = 1", "unknown option 'colour'"),
        ('ttl = "300"', "'ttl' must be an integer, got a string \\(\"300\"\\)$"),
    ],
)
def test_bad_dns_options_stop_start_up_naming_the_table(tmp_path, option, message):
    path = tmp_path / "postern.toml"
    path.write_text(f"[dns.dns_builtin]\n{option}\n")
    with pytest.raises(ConfigError, match=message) as refused:
        build_postern(load_config(path, environ={"POSTERN_DATA_DIR": str(tmp_path)}), open_db=False)
    assert "[dns.dns_builtin]" in str(refused.value)
