"""deploy/caddy/Caddyfile, unchanged, in front of a real ``postern serve``: HTTPS from
Caddy's internal CA to the API, the console and the MCP endpoint, and Postern learning
the client's address and scheme from Caddy because ``trusted_proxies`` names it."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from support.server import free_port, seeding, wait_for
from support.world import make_tenant

from postern.core.models import AuditEvent

ROOT = Path(__file__).parent.parent
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
# CI installs caddy (.ci/run), so there a missing caddy fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not Path(CADDY).exists() and not os.environ.get("CI"), reason="Debian's caddy is not installed"
)
#: The client's own address: Caddy reaches Postern from 127.0.0.1, so an audit row that
#: says 127.0.0.2 was taken from X-Forwarded-For.
CLIENT = "127.0.0.2"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def caddy(tmp_path):
    """Start Caddy on the Caddyfile; yields a function that points it at upstreams."""
    procs = []

    def start(api_port: int, mcp_port: int):
        https_port = free_port()
        home = tmp_path / "caddy-home"
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "CADDY_POSTERN_SITE": "localhost",
            "CADDY_POSTERN_TLS": "internal",
            "CADDY_POSTERN_API": f"127.0.0.1:{api_port}",
            "CADDY_POSTERN_MCP": f"127.0.0.1:{mcp_port}",
            "CADDY_HTTP_PORT": str(free_port()),
            "CADDY_HTTPS_PORT": str(https_port),
            "CADDY_ADMIN": "off",
        }
        log = open(tmp_path / "caddy.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [CADDY, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append((proc, log))
        root = home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        try:
            wait_for(lambda: root.exists() and listening(https_port), timeout=30)
        except AssertionError:
            raise AssertionError((tmp_path / "caddy.log").read_text()) from None
        return https_port, root

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_caddy_terminates_https_for_api_console_and_mcp(serve, db_url, caddy):
    with seeding(db_url):
        acme = make_tenant("acme")
        agent_key = acme.agent_key(handle="bot").agent_key
    mcp_port = free_port()
    server = serve(
        config=lambda s: (
            f'[server]\ntrusted_proxies = ["127.0.0.1/32"]\n[mcp]\nenabled = true\nbind = "127.0.0.1:{mcp_port}"\n'
        ),
        services=("smtp", "mcp"),
    )
    wait_for(lambda: listening(mcp_port), timeout=60)
    https_port, root = caddy(server.port, mcp_port)

    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(root)), local_address=CLIENT)
    with httpx.Client(base_url=f"https://localhost:{https_port}", transport=transport, timeout=30) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        # A client's own X-Forwarded-For is dropped by Caddy; Caddy's is believed.
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {agent_key}", "X-Forwarded-For": "6.6.6.6"})
        assert me.status_code == 200, me.text
        with seeding(db_url):
            row = AuditEvent.get(AuditEvent.request_id == me.headers["x-request-id"])
        assert row.client_addr == CLIENT

        login = client.get("/console/login")
        assert login.status_code == 200 and "<form" in login.text
        signed_in = client.post("/console/login", data={"token": acme.admin_token}, follow_redirects=False)
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("postern_console=") and "Secure" in cookie  # X-Forwarded-Proto: https

        initialize = client.post(
            "/mcp",
            headers={"Authorization": f"Bearer {agent_key}", "Accept": "application/json, text/event-stream"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "caddy-test", "version": "1"},
                },
            },
        )
        assert initialize.status_code == 200, initialize.text
        assert "serverInfo" in initialize.text

    # Straight to Postern, bypassing Caddy: the forged header is not believed.
    with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT)) as direct:
        forged = direct.get(
            f"http://127.0.0.1:{server.port}/v1/me",
            headers={"Authorization": f"Bearer {agent_key}", "X-Forwarded-For": "6.6.6.6"},
        )
    assert forged.status_code == 200
    with seeding(db_url):
        assert AuditEvent.get(AuditEvent.request_id == forged.headers["x-request-id"]).client_addr == CLIENT
