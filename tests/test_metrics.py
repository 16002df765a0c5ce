"""GET /metrics: Prometheus text, summed over API workers and service processes."""

from __future__ import annotations

import smtplib
import threading
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support.server import seeding, wait_for
from support.world import make_tenant

from postern.core.config import ConfigError, config_from_mapping
from postern.core.metrics import UNMATCHED
from postern.server import metrics_dir

TOKEN = "metrics-token-0123456789"


def scrape(server, **headers) -> dict[tuple[str, tuple], float]:
    resp = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def send(server, to: str, subject: str) -> None:
    raw = f"From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [to], raw.encode())


def test_metrics_are_summed_over_api_workers_and_services(serve, db_url, tmp_path):
    with seeding(db_url):
        tenant = make_tenant("acme")
        agent_key = tenant.agent_key(handle="scout").agent_key
    server = serve()  # 2 API workers, the SMTP listener as its own process
    auth = {"Authorization": f"Bearer {agent_key}"}
    inbox = httpx.post(f"{server.url}/v1/inboxes", json={"username": "scout"}, headers=auth, timeout=10).json()
    n, m = 12, 3
    for _ in range(n):  # a new connection each: the kernel spreads them over the workers
        assert httpx.get(f"{server.url}/v1/me", headers=auth, timeout=10).status_code == 200
    for i in range(4):
        assert httpx.get(f"{server.url}/v1/inboxes/inb_nope{i}", headers=auth, timeout=10).status_code == 404
        assert httpx.get(f"{server.url}/no/such/path/{i}", timeout=10).status_code == 404
    for i in range(m):
        send(server, inbox["address"], f"mail {i}")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server, "nobody@acme.agents.localhost", "lost")

    found = scrape(server)
    assert value(found, "postern_api_requests_total", route="/v1/me", method="GET", status="2xx") == n
    assert value(found, "postern_api_request_duration_seconds_count", route="/v1/me") == n
    assert value(found, "postern_api_request_duration_seconds_bucket", route="/v1/me", le="+Inf") == n
    # A path's ids never become labels: one series per route template, one for no route.
    assert value(found, "postern_api_requests_total", route="/v1/inboxes/{inbox_id}", method="GET", status="4xx") == 4
    assert value(found, "postern_api_requests_total", route=UNMATCHED, method="GET", status="4xx") == 4
    assert not [key for key in found if "inb_nope" in str(key) or "/no/such" in str(key)]
    # The SMTP listener's counts, written by another process, reach the API's /metrics.
    assert value(found, "postern_smtp_messages_accepted_total") == m
    assert value(found, "postern_smtp_ingest_duration_seconds_count") == m
    assert value(found, "postern_smtp_sessions_total") >= m + 1
    refused = {"stage": "rcpt", "code": "5xx", "reason": "no_such_mailbox"}
    assert value(found, "postern_smtp_refused_total", **refused) == 1
    assert value(found, "postern_waiters_parked") == 0

    # Every process writes its own file; the scrape summed over them.
    # In RAM (/dev/shm), never on the data disk (postern.server.metrics_dir).
    directory = metrics_dir(SimpleNamespace(data_dir=tmp_path / "data"))
    assert not (tmp_path / "data" / "metrics").exists()
    files = directory.glob("*.db")
    pids = {p.stem.rsplit("_", 1)[1] for p in files}
    assert len(pids) >= 3  # two API workers and the SMTP listener, at least

    # A wait parked in one worker shows in the scrape another worker answers (livesum).
    wait_url = f"{server.url}/v1/inboxes/{inbox['id']}/messages/wait"
    assert len(httpx.get(wait_url, params={"timeout": 0}, headers=auth, timeout=10).json()["messages"]) == m
    with httpx.Client(timeout=30) as waiter:
        done = threading.Event()

        def wait():
            answer = waiter.get(wait_url, params={"timeout": 8}, headers=auth).json()
            if [mail["subject"] for mail in answer["messages"]] == ["wake up"]:
                done.set()

        thread = threading.Thread(target=wait)
        thread.start()
        wait_for(lambda: value(scrape(server), "postern_waiters_parked") == 1, timeout=10)
        send(server, inbox["address"], "wake up")
        thread.join(15)
        assert done.is_set()
    found = scrape(server)
    assert value(found, "postern_waiters_parked") == 0
    assert value(found, "postern_smtp_messages_accepted_total") == m + 1
    assert value(found, "postern_wait_wake_duration_seconds_count") == 1


def test_metrics_only_to_loopback_without_a_token(serve, tmp_path):
    server = serve(services=())
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
    # Through a reverse proxy on this host every client would look local: not served.
    proxied = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert proxied.status_code == 404


def test_a_metrics_token_is_required_when_set(serve):
    server = serve(services=(), env={"POSTERN_METRICS_TOKEN": TOKEN})
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer " + "x" * 24}, timeout=10)
    assert wrong.status_code == 401
    found = scrape(server, Authorization=f"Bearer {TOKEN}")
    assert value(found, "postern_api_requests_total", route="/metrics", method="GET", status="4xx") == 2


def test_metrics_can_be_turned_off(client, config):
    config.metrics.enabled = False
    from postern.api import create_app
    from postern.core.runtime import build_postern

    off = __import__("falcon.testing").testing.TestClient(create_app(build_postern(config)))
    assert off.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 404
    assert client.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 200
    assert client.simulate_get("/metrics", remote_addr="192.0.2.1").status_code == 404


def test_unmatched_paths_share_one_label(client):
    def count(route, status):
        labels = {"route": route, "method": "GET", "status": status}
        return REGISTRY.get_sample_value("postern_api_requests_total", labels) or 0.0

    before = count(UNMATCHED, "4xx"), count("/v1/inboxes/{inbox_id}", "4xx")
    for i in range(5):
        assert client.simulate_get(f"/random/{i}/path-{i}").status_code == 404
        assert client.simulate_get(f"/v1/inboxes/inb_{i}").status_code == 401
    assert count(UNMATCHED, "4xx") - before[0] == 5
    assert count("/v1/inboxes/{inbox_id}", "4xx") - before[1] == 5
    text = client.simulate_get("/metrics", remote_addr="127.0.0.1").text
    assert "/random/" not in text and "inb_1" not in text


def test_a_short_metrics_token_is_refused():
    with pytest.raises(ConfigError, match="metrics.token"):
        config_from_mapping({"metrics": {"token": "short"}})
    assert config_from_mapping({"metrics": {"token": TOKEN}}).metrics.token == TOKEN
