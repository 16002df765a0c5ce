"""PostgreSQL faults against a real `postern serve`: the database unreachable (a TCP
proxy cut), its backends terminated (a restart or failover), a table locked by another
session, and out of space (a tablespace on a small tmpfs). The shared PostgreSQL server
is never stopped. See docs/reliability.md."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dns.rcode
import httpx
import pytest
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port
from support.faults import TcpProxy, fill, small_filesystem
from support.live import (
    SERVICES,
    after_fault,
    api,
    assert_unavailable,
    counts,
    prepare,
    send_body,
    smtp_data,
    start,
    stop,
)
from support.server import Server, descendants, wait_for
from support.world import make_tenant

from postern.core.config import load_config
from postern.core.db import database, open_database
from postern.core.runtime import build_postern

pytestmark = pytest.mark.slow


def proxied(db_url: str, port: int) -> str:
    """``db_url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(db_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def test_postgresql_unreachable(env, tmp_path, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL connection")
    key = prepare(db_url)
    parts = urlsplit(db_url)
    with TcpProxy(parts.hostname, parts.port or 5432) as proxy:
        server = start({**env, "POSTERN_DATABASE_URL": proxied(db_url, proxy.port)}, tmp_path, key)
        try:
            inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
            assert smtp_data(server, inbox["address"])[:2] == (250, 250)
            before = counts(db_url)

            proxy.cut()  # every open connection dies; new ones are refused
            rcpt, data, _ = smtp_data(server, inbox["address"])
            assert rcpt == 451 or (rcpt == 250 and data == 451), (rcpt, data)
            assert_unavailable(api(server, "POST", "/v1/inboxes", json={"username": "sales"}), "database_unavailable")
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("cut"))
            assert_unavailable(sent, "database_unavailable")
            health = httpx.get(f"{server.url}/healthz", timeout=60)
            assert health.status_code == 503 and health.json()["database"]["ok"] is False
            assert counts(db_url) == before

            proxy.restore()
            # The first request after the outage must already work: connections that
            # died are replaced, not handed out broken.
            assert smtp_data(server, inbox["address"])[:2] == (250, 250)
            assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("after"))
            assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
            assert api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
            assert counts(db_url) == after_fault(before)
            wait_for(lambda: server.health() and server.health()["status"] == "ok")
            # No service crashed over it: each lost its connections and made new ones.
            assert {s["name"]: s["restarts"] for s in server.health()["services"]} == dict.fromkeys(SERVICES, 0)
            assert "Traceback" not in server.output()
        finally:
            stop(server)


def server_backends(server: Server, admin) -> list[int]:
    """PostgreSQL backend pids serving the connections of ``server``'s processes, found by
    their client ports (the shared server has other users' sessions too)."""
    import psutil

    ports = set()
    for proc in [psutil.Process(server.proc.pid), *descendants(server.proc.pid)]:
        try:
            ports.update(c.laddr.port for c in proc.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432)
        except psutil.NoSuchProcess:
            continue
    with admin.cursor() as cur:
        cur.execute("SELECT pid, client_port FROM pg_stat_activity WHERE client_addr IS NOT NULL")
        return [pid for pid, port in cur.fetchall() if port in ports]


def test_postgresql_backends_terminated(env, tmp_path, db_url):
    """What a PostgreSQL restart or failover does to kept connections: the server ends
    them with a FATAL message. The next requests must get fresh connections, not errors."""
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL backends")
    import psycopg2

    server = start(env, tmp_path, prepare(db_url))
    admin = psycopg2.connect(db_url)
    admin.autocommit = True
    try:
        inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
        assert smtp_data(server, inbox["address"])[:2] == (250, 250)
        for _ in range(3):  # let every API worker open its connections
            assert api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
        before = counts(db_url)
        backends = server_backends(server, admin)
        assert len(backends) >= 4  # API workers, SMTP, LISTEN connections...
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(p) FROM unnest(%s) p) t", (backends,))
        wait_for(lambda: not set(backends) & set(server_backends(server, admin)))

        # No request fails: each kept connection is found closed and replaced before use.
        assert smtp_data(server, inbox["address"])[:2] == (250, 250)
        for _ in range(3):
            assert api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
        sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("after"))
        assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
        assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
        assert counts(db_url)["messages"] == before["messages"] + 2
        assert {s["name"]: s["restarts"] for s in server.health()["services"]} == dict.fromkeys(SERVICES, 0)
        assert "Traceback" not in server.output()
    finally:
        admin.close()
        stop(server)


def test_postgresql_table_locked_by_another_session(env, tmp_path, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL table lock")
    import psycopg2

    server = start(env, tmp_path, prepare(db_url))
    try:
        inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
        before = counts(db_url)

        locker = psycopg2.connect(db_url)  # e.g. a migration or an operator's LOCK TABLE
        try:
            locker.cursor().execute("LOCK TABLE message IN ACCESS EXCLUSIVE MODE")
            # Each waits out Postern's lock_timeout, then answers "later" (it used to wait
            # for as long as the lock was held).
            assert smtp_data(server, inbox["address"])[:2] == (250, 451)
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("locked"))
            assert_unavailable(sent, "database_unavailable")
            assert_unavailable(api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages"), "database_unavailable")
            # What does not touch the locked table goes on.
            assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
        finally:
            locker.rollback()
            locker.close()

        assert smtp_data(server, inbox["address"])[:2] == (250, 250)
        sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("after"))
        assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
        assert counts(db_url) == after_fault(before)
        assert "Traceback" not in server.output()
    finally:
        stop(server)


def test_postgresql_disk_full(env, tmp_path, db_url):
    """PostgreSQL out of space where our tables live: a tablespace on a small tmpfs, filled.
    Only this test's own schema is in it; the shared server's other data is untouched."""
    if db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL tablespace")
    import pwd
    import secrets

    import psycopg2

    try:
        postgres = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("PostgreSQL does not run on this machine")
    admin = psycopg2.connect(db_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT inet_server_addr() IS NULL OR host(inet_server_addr()) IN ('127.0.0.1', '::1')")
        if not cur.fetchone()[0]:
            pytest.skip("PostgreSQL is not on this machine")
    # tmp_path is private to root; the tablespace lives where postgres can reach it.
    mount = Path(tempfile.mkdtemp(prefix="postern-ts-"))
    name = "t_" + secrets.token_hex(6)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(mount.rmdir)
        disk = cleanup.enter_context(small_filesystem(mount, "16m", owner=f"{postgres.pw_uid}:{postgres.pw_gid}"))
        cur = admin.cursor()
        cur.execute(f"CREATE TABLESPACE {name} LOCATION %s", (str(disk),))
        cur.execute(f"CREATE SCHEMA {name}")
        url = urlunsplit(
            urlsplit(db_url)._replace(query=f"options=-csearch_path%3D{name}%20-cdefault_tablespace%3D{name}")
        )
        server = None
        try:
            server = start({**env, "POSTERN_DATABASE_URL": url}, tmp_path, prepare(url))
            inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
            assert smtp_data(server, inbox["address"])[:2] == (250, 250)
            before = counts(url)
            # Random, so PostgreSQL cannot compress it into the pages it already has.
            noise = base64.encodebytes(os.urandom(300_000))
            big = b"Subject: big\r\n\r\n" + noise.replace(b"\n", b"\r\n")
            filler = fill(disk)

            rcpt, data, text = smtp_data(server, inbox["address"], big)
            assert (rcpt, data) == (250, 452) and "4.3.1" in text, text
            big_send = {**send_body("full"), "text": noise.decode()}
            assert_unavailable(
                api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=big_send), "storage_full"
            )
            assert counts(url) == before

            filler.unlink()
            assert smtp_data(server, inbox["address"], big)[:2] == (250, 250)
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=big_send)
            assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
            assert counts(url)["messages"] == before["messages"] + 2
            assert {s["name"]: s["restarts"] for s in server.health()["services"]} == dict.fromkeys(SERVICES, 0)
        finally:
            if server is not None:
                stop(server)
            cur.execute(f"DROP SCHEMA {name} CASCADE")
            cur.execute(f"DROP TABLESPACE {name}")
            admin.close()


def test_dns_starts_and_follows_zone_changes_across_a_database_outage(tmp_path, env, db, db_url):
    """The DNS server reads zones and subscribes to their changes (LISTEN) through a link
    that is cut at start-up and again later. It must start anyway, and follow changes
    again once the link is back (the hour-long refresh is not what brings them)."""
    if db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL LISTEN connection")
    parts = urlsplit(db_url)
    with TcpProxy(parts.hostname, parts.port or 5432) as proxy:
        config_file = tmp_path / "dns.toml"
        config_file.write_text(dns_config_text(free_udp_and_tcp_port(), "refresh_seconds = 3600\n"))
        through_proxy = {**env, "POSTERN_DATABASE_URL": proxied(db_url, proxy.port)}
        postern = build_postern(load_config(config_file, environ=through_proxy))
        make_tenant("acme")
        proxy.cut()
        ns = RunningDns(postern)  # used to fail: the subscription could not connect
        try:
            assert ns.query("acme.agents.localhost", "SOA").rcode() == dns.rcode.SERVFAIL  # nothing cached yet
            proxy.restore()
            wait_for(lambda: ns.query("acme.agents.localhost", "SOA").rcode() == dns.rcode.NOERROR)
            for label in ("newco", "later"):
                name = f"{label}.agents.localhost"
                assert ns.query(name, "SOA").rcode() == dns.rcode.NXDOMAIN  # cached as such
                database.close()  # this test's own connection went through the cut link too
                make_tenant(label)
                wait_for(lambda: ns.query(name, "SOA").rcode() == dns.rcode.NOERROR, timeout=30)  # noqa: B023
                proxy.cut()  # the live subscription is torn down
                proxy.restore()
        finally:
            ns.stop()


def test_postgresql_sockets_notice_a_silently_dead_link(db_url):
    """A link that dies without a RST (a NAT or firewall forgetting the flow) is noticed in
    about a minute, not after the kernel's two idle hours: the socket itself carries the
    keepalive and user-timeout settings. A value in the URL wins over Postern's."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection")
    assert socket_settings(db_url) == {"keepalive": 1, "idle": 30, "interval": 10, "count": 3, "user_timeout_ms": 60000}
    assert socket_settings(f"{db_url}&keepalives_idle=7&tcp_user_timeout=9000") == {
        "keepalive": 1,
        "idle": 7,
        "interval": 10,
        "count": 3,
        "user_timeout_ms": 9000,
    }


def socket_settings(url: str) -> dict:
    open_database(url)
    try:
        with database.connection_context():
            sock = socket.socket(fileno=os.dup(database.connection().fileno()))
            try:
                return {
                    "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                }
            finally:
                sock.close()
    finally:
        database.close()
