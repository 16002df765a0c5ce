"""A real ``dns_builtin`` server on a free port, in a thread of the test process, and
helpers to query it with dnspython and dig over real sockets."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading

import dns.message
import dns.query
import dns.rdatatype

from postern.core.db import database

from .server import free_port


def free_udp_and_tcp_port() -> int:
    import socket

    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def dns_config_text(port: int, extra: str = "") -> str:
    return f'[dns.dns_builtin]\nbind = "127.0.0.1:{port}"\n{extra}'


class RunningDns:
    """``DnsServer`` on its own event loop in a daemon thread."""

    def __init__(self, postern):
        from postern.plugins.dns_builtin.server import DnsServer

        self.server = DnsServer(postern, postern.backend("dns"))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("DNS server did not start")
        self.host, self.port = self.address

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.address = self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        database.close()  # this thread's connection

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def query(self, name: str, rtype: str = "A", *, tcp: bool = False, **kwargs) -> dns.message.Message:
        message = dns.message.make_query(name, rtype, **kwargs)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(message, self.host, port=self.port, timeout=5, **({} if tcp else {"ignore_trailing": False}))


def dig(port: int, *args: str) -> str:
    """``dig`` output (Debian dnsutils); the tests that use it need it installed."""
    assert shutil.which("dig"), "dig is missing: apt-get install -y dnsutils"
    done = subprocess.run(
        ["dig", "-p", str(port), "@127.0.0.1", "+norec", "+time=3", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout


def rdatas(response: dns.message.Message, rtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset)
