"""Trusted proxies: X-Forwarded-For and X-Forwarded-Proto are believed only from a peer in
``server.trusted_proxies`` (postern/api/forwarded.py, docs/deployment.md)."""

from __future__ import annotations

import falcon.testing
import pytest
from support.world import make_tenant

from postern.api import create_app
from postern.api.forwarded import client_address, client_scheme, trusted_networks
from postern.core.config import load_config
from postern.core.errors import ConfigError
from postern.core.models import AuditEvent
from postern.server import ApiApplication

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PROXIES = ["10.0.0.0/8", "127.0.0.1/32"]


@pytest.fixture
def config(config):
    config.server.trusted_proxies = PROXIES
    return config


NETS = trusted_networks(PROXIES)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # untrusted peer: its header is ignored
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),  # trusted peer: the forwarded client
        ("127.0.0.1", None, "127.0.0.1"),  # trusted peer, no header: the peer
        ("127.0.0.1", "1.1.1.1, 198.51.100.7, 10.0.0.5", "198.51.100.7"),  # untrusted hop in the middle
        ("127.0.0.1", "10.0.0.6, 10.0.0.5", "10.0.0.6"),  # every hop trusted: the leftmost
        ("127.0.0.1", "198.51.100.7:4711", "198.51.100.7"),  # a port is not part of the address
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "garbage, 10.0.0.5", "10.0.0.5"),  # not an address: the last believed hop
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped peer
    ],
)
def test_client_address_walks_right_to_left(peer, xff, expected):
    assert client_address(peer, xff, NETS) == expected


def test_no_trusted_proxies_believes_no_header():
    assert client_address("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"
    assert client_scheme("127.0.0.1", "http", "https", ()) == "http"


def test_forwarded_proto_only_from_a_trusted_peer():
    assert client_scheme("127.0.0.1", "http", "https", NETS) == "https"
    assert client_scheme("203.0.113.9", "http", "https", NETS) == "http"
    assert client_scheme("127.0.0.1", "http", "gopher", NETS) == "http"


def test_trusted_proxies_are_validated(tmp_path):
    path = tmp_path / "postern.toml"
    path.write_text('[server]\ntrusted_proxies = ["10.0.0.1/8"]\n')
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(path, environ={})
    path.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    assert load_config(path, environ={}).server.trusted_proxies == ["10.0.0.0/8", "::1/128"]
    config = load_config(environ={"POSTERN_SERVER_TRUSTED_PROXIES": "127.0.0.1/32, 192.168.0.0/16"})
    assert config.server.trusted_proxies == ["127.0.0.1/32", "192.168.0.0/16"]


def denied_auth_addr(client, peer: str, xff: str | None) -> str:
    headers = {"Authorization": "Bearer pk_agent_" + "x" * 49}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    client.simulate_get("/v1/me", headers=headers, remote_addr=peer)
    row = AuditEvent.select().where(AuditEvent.action == "auth").order_by(AuditEvent.id.desc()).get()
    return row.client_addr


def test_the_audit_row_names_the_client_a_trusted_proxy_forwarded(client):
    make_tenant("acme")
    assert denied_auth_addr(client, "203.0.113.9", "198.51.100.7") == "203.0.113.9"  # forged
    assert denied_auth_addr(client, "127.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert denied_auth_addr(client, "10.1.2.3", "1.1.1.1, 198.51.100.8, 10.0.0.5") == "198.51.100.8"


def test_the_console_throttles_and_secures_per_forwarded_client(postern):
    acme = make_tenant("acme")
    postern.config.console.max_failed_logins = 2
    client = falcon.testing.TestClient(create_app(postern))

    def login(token, xff, proto=None):
        headers = {**FORM, "X-Forwarded-For": xff}
        if proto:
            headers["X-Forwarded-Proto"] = proto
        return client.simulate_post("/console/login", body=f"token={token}", headers=headers, remote_addr="127.0.0.1")

    for _ in range(2):
        assert login("nonsense", "198.51.100.7").status_code != 303
    assert login(acme.admin_token, "198.51.100.7").status_code == 429  # that client waits...
    other = login(acme.admin_token, "198.51.100.8", proto="https")  # ...another behind the proxy does not
    assert other.status_code == 303 and other.cookies["postern_console"].secure
    assert not login(acme.admin_token, "198.51.100.9").cookies["postern_console"].secure
    forged = client.simulate_post(
        "/console/login",
        body=f"token={acme.admin_token}",
        headers={**FORM, "X-Forwarded-Proto": "https"},
        remote_addr="203.0.113.9",
    )
    assert forged.status_code == 303 and not forged.cookies["postern_console"].secure


def test_gunicorn_leaves_forwarded_headers_to_postern(config):
    app = ApiApplication(config)
    assert app.cfg.forwarded_allow_ips == [] and app.cfg.secure_scheme_headers == {}
