"""Connection bounds of the HTTP API and the SMTP listener, over real sockets on loopback:
idle and slow clients are cut off after the configured bound, and connections over a
cap are refused (503 / 421 4.7.0) while another client (another loopback address) is
still served. The DNS server's per-client share is in test_dns_hostile.py."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import smtplib
import socket
import subprocess
import sys
import time

import httpx
import pytest
from support.server import Server, free_port, kill_tree, wait_for
from support.world import INFO, make_tenant

from postern.core.auth import authenticate
from postern.core.inboxes import create_inbox
from postern.core.runtime import build_postern

pytestmark = pytest.mark.slow

OTHER_CLIENT = "127.0.0.2"  # another loopback address: another client to the per-client caps
THIRD_CLIENT = "127.0.0.3"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))


def closed_by_server(sock: socket.socket, deadline_s: float = 30.0) -> bool:
    """True once the server has closed ``sock`` (EOF or reset), reading and discarding
    whatever it sent first; False if it is still open at the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


# -- HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def api(env, tmp_path, db):
    servers = []

    def start(**settings):
        extra = {f"POSTERN_SERVER_{key.upper()}": str(value) for key, value in settings.items()}
        server = Server({**env, "POSTERN_SERVER_WORKERS": "1", **extra}, tmp_path, "--only", "api")
        servers.append(server)
        wait_for(lambda: server.health() is not None, timeout=60)
        return server

    yield start
    for server in servers:
        kill_tree(server)


def test_http_connections_that_send_nothing_are_closed_after_the_header_timeout(api):
    server = api(header_timeout=2)
    started = time.monotonic()
    idle = [connect(server.port) for _ in range(100)]
    try:
        assert all(closed_by_server(sock) for sock in idle)
        assert time.monotonic() - started >= 1.5  # given their bound first
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


def test_http_headers_trickled_slowly_are_cut_off(api):
    server = api(header_timeout=2)
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 30 and not cut:
            try:
                sock.sendall(b"X")  # a byte of one never-ending header, every 0.2 s
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                cut = closed_by_server(sock, 5)
        assert cut, "a slowloris client kept its connection for 30 s"
        assert time.monotonic() - started < 15


def test_http_second_request_trickled_slowly_is_cut_off_at_keepalive(api):
    server = api(keepalive=2, header_timeout=2)
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first_line(sock) == b"HTTP/1.1 200 OK"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 30 and not cut:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            cut = bool(readable) and closed_by_server(sock, 5)
        assert cut, "a second request trickled in kept its connection for 30 s"
        assert time.monotonic() - started < 15


def test_http_idle_keepalive_connection_is_closed_after_keepalive(api):
    server = api(keepalive=3)
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first_line(sock) == b"HTTP/1.1 200 OK"
        answered = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - answered >= 2.5  # kept for the configured 3 s, not gunicorn's 2


def test_http_connections_over_the_caps_get_503_and_others_are_served(api):
    server = api(max_connections=8, max_connections_per_client=5, header_timeout=120)
    held = [connect(server.port) for _ in range(5)]
    try:
        with connect(server.port) as extra:  # the same client's 6th
            assert first_line(extra) == b"HTTP/1.1 503 Service Unavailable"
            assert closed_by_server(extra)
        with httpx.Client(transport=httpx.HTTPTransport(local_address=OTHER_CLIENT), timeout=30) as other:
            assert other.get(f"{server.url}/healthz").status_code == 200
        held += [connect(server.port, OTHER_CLIENT) for _ in range(3)]  # 8 open: the total cap
        with connect(server.port, THIRD_CLIENT) as third:
            reply = b""
            while chunk := third.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 503 ")
            assert b'"code": "too_many_connections"' in reply
    finally:
        for sock in held:
            sock.close()
    # Closed connections free their slots.
    wait_for(lambda: httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200, timeout=30)


# -- SMTP ------------------------------------------------------------------------------------


@pytest.fixture
def smtp(env, tmp_path, db):
    procs = []

    def start(options: str = "") -> int:
        port = free_port()
        config = tmp_path / f"smtp-{port}.toml"
        config.write_text(f'[receive.smtp_local]\nbind = "127.0.0.1:{port}"\n{options}')
        log = open(tmp_path / f"smtp-{port}.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "postern", "--config", str(config), "service", "run", "smtp"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append((proc, log))
        wait_for(lambda: greets(port), timeout=60)
        return port

    yield start
    for proc, log in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def greets(port: int) -> bool:
    with contextlib.suppress(OSError, smtplib.SMTPException), smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.noop()[0] == 250
    return False


def test_smtp_idle_session_is_closed_after_the_command_timeout(smtp):
    port = smtp("command_timeout = 2\n")
    with connect(port) as sock:
        assert first_line(sock).startswith(b"220 ")
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started >= 1.5


def test_smtp_command_trickled_slowly_is_cut_off(smtp):
    port = smtp("command_timeout = 2\n")
    with connect(port) as sock:
        assert first_line(sock).startswith(b"220 ")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 30 and not cut:
            try:
                sock.sendall(b"N")  # "NNNN...": a command line that never ends, a byte per 0.2 s
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            cut = bool(readable) and closed_by_server(sock, 5)
        assert cut, "a client trickling one command kept its session for 30 s"
        assert time.monotonic() - started < 15


def test_smtp_message_body_gets_the_data_timeout_not_the_command_timeout(smtp, config):
    postern = build_postern(config)
    agent = make_tenant("acme").agent_key()
    inbox, _ = create_inbox(postern, authenticate(agent.agent_key, "agent", INFO), INFO, {"username": "box"})
    port = smtp("command_timeout = 2\ndata_timeout = 60\n")
    with connect(port) as sock:
        assert first_line(sock).startswith(b"220 ")
        for command in (b"HELO x", b"MAIL FROM:<a@example.org>", f"RCPT TO:<{inbox.address}>".encode()):
            sock.sendall(command + b"\r\n")
            assert first_line(sock).startswith(b"250")
        sock.sendall(b"DATA\r\n")
        assert first_line(sock).startswith(b"354")
        started = time.monotonic()
        sock.sendall(b"Subject: slow\r\n\r\n")
        while time.monotonic() - started < 4:  # the body takes twice the command timeout
            sock.sendall(b"line\r\n")
            time.sleep(0.25)  # the slow sender itself, not a wait for the server
        sock.sendall(b".\r\n")
        assert first_line(sock).startswith(b"250 2.0.0 OK stored")
        # Back under the command timeout: an idle session after the message is cut at 2 s.
        after = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - after < 30


def test_smtp_connection_over_the_per_client_cap_gets_421_and_others_get_220(smtp):
    port = smtp()  # the default cap: 50 sessions per client address
    held = []
    try:
        for _ in range(50):
            sock = connect(port)
            held.append(sock)
            assert first_line(sock).startswith(b"220 ")
        with connect(port) as extra:
            line = first_line(extra)
            assert line.startswith(b"421 4.7.0 "), line
            assert closed_by_server(extra)
        with connect(port, OTHER_CLIENT) as other:
            assert first_line(other).startswith(b"220 ")
    finally:
        for sock in held:
            sock.close()


def test_smtp_connection_over_the_total_cap_gets_421(smtp):
    port = smtp("max_connections = 4\nmax_connections_per_client = 3\n")
    held = []
    try:
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.1", OTHER_CLIENT):
            held.append(connect(port, source))
            assert first_line(held[-1]).startswith(b"220 ")
        with connect(port, THIRD_CLIENT) as third:
            assert first_line(third) == b"421 4.7.0 Too many connections, try again later"
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: greets(port), timeout=30)  # freed slots are given out again
