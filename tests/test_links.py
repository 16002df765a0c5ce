"""Download links: HMAC-signed, short-lived, single-use; bytes come back exactly."""

from __future__ import annotations

import base64
import hashlib
import threading
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
    assert resp.status_code == 201 and resp.json["url"].startswith("http")
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
