"""`postern serve` supervises dns_builtin: it answers over real sockets, and a tenant made
by another process answers at once, rung across processes (Unix socket or NOTIFY)."""

from __future__ import annotations

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from support.server import Server, kill_tree, wait_for
from support.world import make_tenant

from postern.core import migrations
from postern.core.db import database, open_database

pytestmark = pytest.mark.slow
BASE = "agents.localhost"


def ask(port: int, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    send = dns.query.tcp if tcp else dns.query.udp
    return send(dns.message.make_query(name, rtype), "127.0.0.1", port=port, timeout=15)


def test_serve_runs_dns_and_new_tenants_answer_at_once(env, tmp_path, db_url):
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        make_tenant("acme")
    # Lines before any table header land in [dns.dns_builtin], the config file's last
    # table: an hour-long refresh, so only the ring can bring a new tenant in time.
    server = Server(env, tmp_path, config=lambda _: "refresh_seconds = 3600\n")
    try:
        wait_for(lambda: (h := server.health()) and any(s["name"] == "dns" for s in h["services"]))

        def answering():
            try:
                return ask(server.dns_port, f"acme.{BASE}", "MX").answer
            except (OSError, dns.exception.Timeout):
                return None

        wait_for(answering)
        for tcp in (False, True):
            response = ask(server.dns_port, f"acme.{BASE}", "MX", tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR
            assert [rd.to_text() for rd in response.answer[0]] == [f"10 mail.{BASE}."]
        assert ask(server.dns_port, f"globex.{BASE}", "SOA").rcode() == dns.rcode.NXDOMAIN
        with database.connection_context():
            make_tenant("globex")  # this process rings; the supervised server listens
        wait_for(lambda: ask(server.dns_port, f"globex.{BASE}", "SOA").answer, timeout=60, interval=0.05)
        assert ask(server.dns_port, "example.com", "A").rcode() == dns.rcode.REFUSED
    finally:
        kill_tree(server)
