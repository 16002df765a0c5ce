"""Download links: HMAC-signed, short-lived, single-use; bytes come back exactly."""

from __future__ import annotations

import base64
import hashlib
import threading
from types import SimpleNamespace
from urllib.parse import urlsplit

import falcon.testing
import pytest
from support.world import INFO, make_tenant

from postern.api import create_app
from postern.core.db import database
from postern.core.errors import NotFound
from postern.core.mail import links
from postern.core.mail.ingest import ingest
from postern.core.models import DownloadLink, utcnow
from postern.core.runtime import build_postern

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


@pytest.fixture
def setup(config, db):
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    acme = make_tenant("acme")
    agent = acme.agent_key()
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "docs"}).json
    raw = (
        f"From: a@example.org\r\nTo: {inbox['address']}\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
        "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
        + base64.encodebytes(PDF).decode().replace("\n", "\r\n")
        + "--b--\r\n"
    ).encode()
    [message] = ingest(postern, raw, "a@example.org", [inbox["address"]])
    return client, headers, inbox, message, raw


def path_of(url: str) -> str:
    return urlsplit(url).path


def test_raw_link_returns_the_exact_bytes_once(setup):
    client, headers, inbox, message, raw = setup
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages/{message.id}/raw-link", headers=headers)
    assert resp.status_code == 201 and resp.json["url"].startswith("/v1/downloads/")
    first = client.simulate_get(path_of(resp.json["url"]))
    assert first.status_code == 200 and first.content == raw
    assert first.headers["content-type"] == "application/octet-stream"
    assert (
        first.headers["x-content-type-options"] == "nosniff" and first.headers["content-security-policy"] == "sandbox"
    )
    second = client.simulate_get(path_of(resp.json["url"]))
    assert second.status_code == 410 and second.json["error"]["code"] == "link_gone"


def test_attachment_link_round_trips_byte_for_byte(setup):
    client, headers, inbox, message, _ = setup
    detail = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{message.id}", headers=headers).json
    [att] = detail["attachments"]
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{message.id}/attachments/{att['id']}/link", headers=headers
    )
    got = client.simulate_get(path_of(resp.json["url"]))
    assert got.status_code == 200 and got.content == PDF
    assert hashlib.sha256(got.content).hexdigest() == att["sha256"]
    assert "filename*=UTF-8''report.pdf" in got.headers["content-disposition"]
    assert got.headers["x-postern-content-type"] == "application/pdf"


def test_expired_and_forged_links(setup):
    client, headers, inbox, message, _ = setup
    url = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages/{message.id}/raw-link", headers=headers).json["url"]
    token = path_of(url).rsplit("/", 1)[1]
    link_id, expires, signature = token.split(".")
    forged = [
        f"{link_id}.{int(expires) + 3600}.{signature}",  # a longer life
        f"{link_id}.{expires}.{'0' * 64}",
        f"{link_id}.{expires}",
        "nonsense",
        f"dl_{'a' * 26}.{expires}.{signature}",
    ]
    for bad in forged:
        resp = client.simulate_get(f"/v1/downloads/{bad}")
        assert resp.status_code == 404, bad
    DownloadLink.update(expires_at=utcnow()).where(DownloadLink.id == link_id).execute()
    assert client.simulate_get(path_of(url)).status_code == 410


def test_links_need_the_read_scope_and_the_right_tenant(setup):
    client, headers, inbox, message, _ = setup
    stranger = make_tenant("globex").agent_key()
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{message.id}/raw-link",
        headers={"Authorization": f"Bearer {stranger.agent_key}"},
    )
    assert resp.status_code == 404
    sender_only = make_tenant("initech").agent_key(scopes=["mailbox:send"])
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages/{message.id}/raw-link",
        headers={"Authorization": f"Bearer {sender_only.agent_key}"},
    )
    assert resp.status_code == 403 and resp.json["error"]["code"] == "insufficient_scope"


def test_a_link_works_once_under_concurrency(setup, db_url):
    client, headers, inbox, message, _ = setup
    url = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages/{message.id}/raw-link", headers=headers).json["url"]
    token = path_of(url).rsplit("/", 1)[1]
    outcomes, barrier = [], threading.Barrier(8)

    def fetch():
        barrier.wait()
        with database.connection_context():
            try:
                links.redeem(INFO, token)
                outcomes.append("ok")
            except links.LinkGone:
                outcomes.append("gone")
            except NotFound:
                outcomes.append("missing")

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["gone"] * 7 + ["ok"]


# -- Where links point (hardening issue, item 8) ----------------------------------------

FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"}


def link_urls(client, headers, inbox, message) -> list[str]:
    base = f"/v1/inboxes/{inbox['id']}/messages/{message.id}"
    attachment = client.simulate_get(base, headers=headers).json["attachments"][0]["id"]
    urls = []
    for path in (f"{base}/raw-link", f"{base}/attachments/{attachment}/link"):
        resp = client.simulate_post(path, headers={**headers, **FORGED})
        assert resp.status_code == 201, resp.text
        urls.append(resp.json["url"])
    return urls


def test_links_are_built_on_the_configured_public_url_never_the_host_header(setup, config):
    client, headers, inbox, message, _ = setup
    config.server.public_url = "https://postern.example.org/mail"
    for url in link_urls(client, headers, inbox, message):
        assert url.startswith("https://postern.example.org/mail/v1/downloads/") and "evil" not in url


def test_without_a_public_url_links_are_relative_to_the_api_root(setup):
    client, headers, inbox, message, _ = setup
    for url in link_urls(client, headers, inbox, message):
        assert url.startswith("/v1/downloads/") and "evil" not in url
        assert client.simulate_get(url).status_code == 200


def test_the_sdk_makes_relative_links_absolute_on_its_own_base_url(setup):
    from postern.client import Postern
    from postern.testing.inprocess import InProcessTransport

    client, headers, inbox, message, raw = setup
    transport = InProcessTransport(client.app)
    try:
        key = headers["Authorization"].removeprefix("Bearer ")
        with Postern(api_key=key, base_url="http://postern.test", transport=transport) as sdk:
            link = sdk.messages.raw_link(inbox["id"], message.id)
            assert link.url.startswith("http://postern.test/v1/downloads/")
            assert sdk.download(link) == raw
    finally:
        transport.shutdown()


def test_webhook_links_fall_back_to_the_server_public_url(config, db):
    from postern.core.webhooks.events import message_links

    config.server.public_url = "https://postern.example.org"
    postern = build_postern(config)
    message = SimpleNamespace(id="x", inbox_id="inb_1", thread_id="thr_1")
    assert message_links(postern, message)["raw_link"].startswith("https://postern.example.org/v1/inboxes/inb_1/")
    config.webhooks.public_url = "https://hooks.example.org"
    assert message_links(postern, message)["message"] == "https://hooks.example.org/v1/inboxes/inb_1/messages/x"


def test_server_public_url_is_checked_and_normalised(tmp_path):
    from postern.core.config import ConfigError, load_config

    loaded = load_config(environ={"POSTERN_SERVER_PUBLIC_URL": "https://p.example.org/"})
    assert loaded.server.public_url == "https://p.example.org"
    assert load_config(environ={}).server.public_url == ""
    (tmp_path / "bad.toml").write_text('[server]\npublic_url = "p.example.org"\n')
    with pytest.raises(ConfigError, match="server.public_url must start with http"):
        load_config(tmp_path / "bad.toml", environ={})
