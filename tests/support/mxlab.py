"""A lab of mail exchangers on loopback for direct delivery: aiosmtpd servers on
127.0.0.x (one port, several loopback addresses), DNS from ``ZoneDns``, and MTA-STS
policies served over HTTPS with certificates from a trustme CA. Fixtures: ``port``,
``ca``, ``ca_file``, ``smtp``, ``zone``, ``sts``, ``make`` (a ``DirectTransport``)."""

from __future__ import annotations

import http.server
import ssl
import threading
from dataclasses import dataclass

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from postern.plugins.smtp_local.direct import DirectTransport

from .server import free_port
from .zone_dns import ZoneDns

POLICY = "version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def port():
    return free_port()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("direct-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@dataclass
class Received:
    sender: str
    rcpts: list[str]
    content: bytes
    tls: bool


class Handler:
    """Records what arrives; ``rcpt(address)`` gives the reply to each RCPT."""

    def __init__(self, rcpt=None):
        self.rcpt = rcpt or (lambda address: "250 2.1.5 OK")
        self.mails: list[str] = []
        self.messages: list[Received] = []
        self.peers: set = set()
        self.ehlo_names: list[str] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo_names.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails.append(address)
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt(address)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl is not None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls))
        return "250 2.0.0 queued"


class CountingSMTP(SMTP):
    def connection_made(self, transport):
        # Called again after STARTTLS, with the same peer: a set counts TCP connections.
        self.event_handler.peers.add(transport.get_extra_info("peername"))
        super().connection_made(transport)


class CountingController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def smtp(port, ca):
    """smtp("127.0.0.2", tls_name=..., rcpt=...) starts an MX there; stopped at the end."""
    running = []

    def start(address: str, *, rcpt=None, tls_name: str = "", tls_ca=None, **kwargs) -> Handler:
        handler = Handler(rcpt)
        if tls_name:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            (tls_ca or ca).issue_cert(tls_name).configure_cert(context)
            kwargs.update(tls_context=context, require_starttls=False)
        controller = CountingController(handler, hostname=address, port=port, **kwargs)
        controller.start()
        running.append(controller)
        handler.peers.clear()  # the controller's own start-up probe
        return handler

    yield start
    for controller in running:
        controller.stop()


@pytest.fixture
def zone():
    server = ZoneDns({})
    yield server
    server.close()


class PolicyServer:
    """https://mta-sts.<domain>/.well-known/mta-sts.txt for the domains in ``policies``."""

    def __init__(self, ca, address: str, policies: dict[str, str], content_type: str = "text/plain"):
        self.policies, self.hits = policies, 0
        outer = self

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = outer.policies.get(self.headers["Host"], "").encode()
                ok = self.path == "/.well-known/mta-sts.txt" and body
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*policies).configure_cert(context)
        self.httpd = http.server.ThreadingHTTPServer((address, 0), Page)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sts(ca, zone):
    """sts(domain, mode, mx) publishes a policy for ``domain`` (TXT + HTTPS on 127.0.0.20)."""
    servers = []

    def publish(domain: str, mode: str, mx: str, content_type: str = "text/plain") -> PolicyServer:
        server = PolicyServer(ca, "127.0.0.20", {f"mta-sts.{domain}": POLICY.format(mode=mode, mx=mx)}, content_type)
        servers.append(server)
        zone.add(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=20260101")
        zone.add(f"mta-sts.{domain}", "A", "127.0.0.20")
        return server

    yield publish
    for server in servers:
        server.stop()


@pytest.fixture
def make(zone, port, ca_file):
    made = []

    def transport(**options) -> DirectTransport:
        # No DNS cache by default: the lab's zones change within a test.
        options = {"helo": "out.postern.test", "resolver": zone.address, "smtp_port": port, "timeout": 3, **options}
        options.setdefault("dns_cache", False)
        options.setdefault("deadline", 3 * options["timeout"])
        made.append(DirectTransport(ca_file=ca_file, **options))
        return made[-1]

    yield transport
    for transport in made:
        transport.close()


def mx(zone, domain: str, *hosts: tuple[int, str, str]) -> None:
    """MX records for ``domain``: (preference, host, address) each."""
    for preference, host, address in hosts:
        zone.add(domain, "MX", f"{preference} {host}.")
        zone.add(host, "A", address)
