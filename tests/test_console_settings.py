"""The console's domains and webhooks pages over the real API app (falcon's test client):
tenancy, the domain check through Postern's own DNS server, redelivery and secret
rotation through the same core calls as the API, audited, and CSRF on every change."""

from __future__ import annotations

import re

import pytest
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port
from support.receiver import Receiver
from support.world import INFO, make_tenant, operator_token, seed_inbox, seed_webhook
from test_console import csrf_of, post, sign_in

from postern.client import WebhookVerificationError, verify_webhook
from postern.core.auth import authenticate
from postern.core.config import load_config
from postern.core.models import AuditEvent, ConsoleSession, DomainCheck, Webhook, WebhookDelivery
from postern.core.webhooks import dispatch, manage, signing

BASE = "agents.localhost"
ACME = f"acme.{BASE}"
SALES = f"sales.{ACME}"
BOLT = f"bolt.{BASE}"


@pytest.fixture
def port():
    return free_udp_and_tcp_port()


@pytest.fixture
def config(tmp_path, env, port):
    """Postern's DNS server on ``port`` and the domain check resolving through it;
    webhooks may call the loopback receiver."""
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(port, f'resolvers = ["127.0.0.1:{port}"]\n'))
    config = load_config(path, environ=env)
    config.webhooks.allow_destinations = ["127.0.0.0/8"]
    config.webhooks.timeout_seconds = 10
    return config


@pytest.fixture
def world(postern):
    a, b = make_tenant("acme"), make_tenant("bolt")
    a_agent = a.agent_key(handle="sales", domains=[SALES])
    b_agent = b.agent_key(handle="ops")
    a_hook, b_hook = seed_webhook(postern, a_agent), seed_webhook(postern, b_agent)
    seed_inbox(postern, a_agent, "sales")  # an inbox.created delivery for each webhook
    seed_inbox(postern, b_agent, "ops")
    return a, b, a_agent, b_agent, a_hook, b_hook


def hook_to(postern, enrolled, url: str) -> tuple[Webhook, str]:
    """A webhook of ``enrolled``'s for every test event, made through the core; with its secret."""
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    return manage.create_webhook(postern, principal, INFO, {"url": url, "event_types": ["inbox.created"]})


def queue_test_event(postern, enrolled, hook) -> WebhookDelivery:
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    return manage.send_test(postern, principal, INFO, hook.id)


def admin_token_id() -> str:
    return ConsoleSession.select().order_by(ConsoleSession.created_at.desc()).first().admin_token_id


def unlabelled(html: str) -> list[str]:
    """Ids of visible form fields without a <label for=...>, and fields without an id."""
    missing = []
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
        if 'type="hidden"' in tag:
            continue
        found = re.search(r'\bid="([^"]+)"', tag)
        if found is None or f'for="{found.group(1)}"' not in html:
            missing.append(tag)
    return missing


def same_404(client, cookies, path: str, nobody: str, foreign: str, method: str = "get", csrf=None):
    if method == "get":
        one = client.simulate_get(path.format(nobody), cookies=cookies)
        two = client.simulate_get(path.format(foreign), cookies=cookies)
    else:
        one, two = post(client, path.format(nobody), cookies, csrf), post(client, path.format(foreign), cookies, csrf)
    assert one.status_code == two.status_code == 404, path
    assert one.text.replace(nobody, "ID") == two.text.replace(foreign, "ID"), path


# -- domains --------------------------------------------------------------------------------


def test_an_org_admin_sees_its_domains_with_records_zone_text_and_delegation(client, world):
    cookies = sign_in(client, world[0].admin_token)
    listing = client.simulate_get("/console/domains", cookies=cookies)
    assert listing.status_code == 200
    assert f'href="/console/domains/{ACME}"' in listing.text and f'href="/console/domains/{SALES}"' in listing.text
    assert "bolt" not in listing.text
    assert "<script>" not in listing.text and "<style" not in listing.text and not unlabelled(listing.text)

    page = client.simulate_get(f"/console/domains/{SALES}", cookies=cookies)
    assert page.status_code == 200, page.text
    assert "unverified" in page.text and "Verify now" in page.text
    assert f"$ORIGIN {ACME}.\n" in page.text
    assert f"{SALES}.\t300\tIN\tMX\t10 mail.{BASE}." in page.text  # the zone-file line
    assert f"<td><code>{SALES}</code></td><td>300</td><td>MX</td><td><code>10 mail.{BASE}</code></td>" in page.text
    assert f"ns1.{BASE}" in page.text and 'data-copy="zone-text"' in page.text  # delegation, copy button
    assert "PRIVATE" not in page.text
    assert '<th scope="col">' in page.text and not unlabelled(page.text)
    read = AuditEvent.select().where(AuditEvent.action == "domain.read").get()
    assert (read.target, read.token_id) == (SALES, admin_token_id())


def test_another_tenants_domain_reads_as_missing(client, world):
    cookies = sign_in(client, world[0].admin_token)
    csrf = csrf_of(client, cookies)
    same_404(client, cookies, "/console/domains/{}", f"nosuch.{BASE}", BOLT)
    same_404(client, cookies, "/console/domains/{}/verify", f"nosuch.{BASE}", BOLT, "post", csrf)
    assert DomainCheck.select().count() == 0
    operator = sign_in(client, operator_token())
    listing = client.simulate_get("/console/domains", cookies=operator).text
    assert f"/console/domains/{ACME}" in listing and f"/console/domains/{BOLT}" in listing
    assert client.simulate_get(f"/console/domains/{BOLT}", cookies=operator).status_code == 200


def test_verify_now_checks_through_the_resolver_stores_and_audits(postern, client, world):
    cookies = sign_in(client, world[0].admin_token)
    csrf = csrf_of(client, cookies)
    refused = post(client, f"/console/domains/{SALES}/verify", cookies)
    assert refused.status_code == 403 and DomainCheck.select().count() == 0
    ns = RunningDns(postern)
    try:
        done = post(client, f"/console/domains/{SALES}/verify", cookies, csrf)
    finally:
        ns.stop()
    assert done.status_code == 303 and done.headers["location"].endswith(f"/console/domains/{SALES}")
    assert DomainCheck.get_by_id(SALES).status == "verified"
    page = client.simulate_get(f"/console/domains/{SALES}", cookies=cookies).text
    assert '<span class="pill ok">verified</span>' in page and "Last check" in page
    row = AuditEvent.get(AuditEvent.action == "domain.verify", AuditEvent.outcome == "ok")
    assert (row.code, row.target, row.token_id) == ("verified", SALES, admin_token_id())
    listing = client.simulate_get("/console/domains", cookies=cookies).text
    assert '<span class="pill ok">verified</span>' in listing


def test_an_unreachable_resolver_is_an_error_page_and_nothing_is_stored(client, world):
    cookies = sign_in(client, world[0].admin_token)
    down = post(client, f"/console/domains/{SALES}/verify", cookies, csrf_of(client, cookies))  # no DNS server
    assert down.status_code == 503 and "resolver_unreachable" in down.text
    assert int(down.headers["retry-after"]) >= 1
    assert DomainCheck.select().count() == 0


# -- webhooks -------------------------------------------------------------------------------


def test_an_org_admin_sees_its_webhooks_and_their_delivery_log(client, world):
    a, _, _, _, a_hook, b_hook = world
    cookies = sign_in(client, a.admin_token)
    listing = client.simulate_get("/console/webhooks", cookies=cookies)
    assert listing.status_code == 200
    assert f"/console/webhooks/{a_hook.id}" in listing.text and b_hook.id not in listing.text
    page = client.simulate_get(f"/console/webhooks/{a_hook.id}", cookies=cookies)
    assert page.status_code == 200
    logged = list(WebhookDelivery.select().where(WebhookDelivery.webhook == a_hook.id))
    assert {d.event_type for d in logged} == {"inbox.created", "message.received"}  # the seeded inbox and mail
    assert all(d.id in page.text for d in logged) and "inbox.created" in page.text and "pending" in page.text
    delivery = logged[0]
    assert f"/console/webhooks/{a_hook.id}/deliveries/{delivery.id}/redeliver" in page.text
    assert "whsec_" not in page.text and not unlabelled(page.text)
    assert "<script>" not in page.text and '<th scope="col">' in page.text
    empty = client.simulate_get(f"/console/webhooks/{a_hook.id}", params={"status": "failed"}, cookies=cookies)
    assert not any(d.id in empty.text for d in logged) and "No deliveries with status failed" in empty.text
    bad = client.simulate_get(f"/console/webhooks/{a_hook.id}", params={"status": "lost"}, cookies=cookies)
    assert bad.status_code == 422
    read = AuditEvent.get(AuditEvent.action == "webhook.delivery.list", AuditEvent.outcome == "ok")
    assert (read.target, read.token_id) == (a_hook.id, admin_token_id())

    operator = sign_in(client, operator_token())
    everything = client.simulate_get("/console/webhooks", cookies=operator).text
    assert a_hook.id in everything and b_hook.id in everything


def test_another_tenants_webhook_reads_as_missing_and_changes_nothing(client, world):
    a, _, _, _, a_hook, b_hook = world
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    nobody = "whk_" + "0" * 26
    b_secret = Webhook.get_by_id(b_hook.id).secret
    b_delivery = WebhookDelivery.get(WebhookDelivery.webhook == b_hook.id)
    same_404(client, cookies, "/console/webhooks/{}", nobody, b_hook.id)
    same_404(client, cookies, "/console/webhooks/{}/rotate-secret", nobody, b_hook.id, "post", csrf)
    redeliver = "/console/webhooks/{}/deliveries/" + b_delivery.id + "/redeliver"
    same_404(client, cookies, redeliver, nobody, b_hook.id, "post", csrf)
    # Its own webhook with another tenant's delivery is missing too.
    mine = post(client, f"/console/webhooks/{a_hook.id}/deliveries/{b_delivery.id}/redeliver", cookies, csrf)
    assert mine.status_code == 404
    assert Webhook.get_by_id(b_hook.id).secret == b_secret
    assert WebhookDelivery.get_by_id(b_delivery.id).next_attempt_at == b_delivery.next_attempt_at
    denied = AuditEvent.select().where(AuditEvent.outcome == "denied", AuditEvent.code == "not_found").count()
    assert denied >= 5  # every refusal leaves a trail, as on the API


def test_redeliver_sends_the_same_delivery_again_and_is_audited(postern, client, world):
    a, _, a_agent, *_ = world
    with Receiver() as receiver:
        hook, _ = hook_to(postern, a_agent, receiver.url)
        delivery = queue_test_event(postern, a_agent, hook)
        assert dispatch.deliver_due(postern) >= 1
        receiver.wait_for(1)
        assert WebhookDelivery.get_by_id(delivery.id).status == "succeeded"

        cookies = sign_in(client, a.admin_token)
        csrf = csrf_of(client, cookies)
        path = f"/console/webhooks/{hook.id}/deliveries/{delivery.id}/redeliver"
        assert post(client, path, cookies).status_code == 403  # no CSRF token: nothing queued
        assert WebhookDelivery.get_by_id(delivery.id).status == "succeeded"
        done = post(client, path, cookies, csrf)
        assert done.status_code == 303 and done.headers["location"].endswith(f"/console/webhooks/{hook.id}")
        assert WebhookDelivery.get_by_id(delivery.id).status == "pending"
        dispatch.deliver_due(postern)
        first, second = receiver.wait_for(2)
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    row = WebhookDelivery.get_by_id(delivery.id)
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 2, 200)
    page = client.simulate_get(f"/console/webhooks/{hook.id}", cookies=cookies).text
    assert "<td>2</td>" in page and "<code>200</code>" in page and '<span class="pill ok">succeeded</span>' in page
    audited = AuditEvent.get(AuditEvent.action == "webhook.delivery.retry", AuditEvent.outcome == "ok")
    assert (audited.target, audited.token_id) == (delivery.id, admin_token_id())


def test_rotate_shows_the_new_secret_once_and_the_old_one_stops_verifying(postern, client, world):
    a, _, a_agent, *_ = world
    with Receiver() as receiver:
        hook, old = hook_to(postern, a_agent, receiver.url)
        cookies = sign_in(client, a.admin_token)
        csrf = csrf_of(client, cookies)
        path = f"/console/webhooks/{hook.id}/rotate-secret"
        before = Webhook.get_by_id(hook.id).secret
        refused = post(client, path, cookies, grace_hours="0")
        assert refused.status_code == 403 and Webhook.get_by_id(hook.id).secret == before
        bad = post(client, path, cookies, csrf, grace_hours="-1")
        assert bad.status_code == 422 and Webhook.get_by_id(hook.id).secret == before

        shown = post(client, path, cookies, csrf, grace_hours="0")
        assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
        new = re.search(r'value="(whsec_[^"]+)"', shown.text).group(1)
        assert new != old and 'data-copy="new-secret"' in shown.text and not unlabelled(shown.text)
        assert "no longer signs" in shown.text
        row = Webhook.get_by_id(hook.id)
        assert signing.decrypt(row.secret, row.id) == new and row.previous_secret is None
        for page in ("/console/webhooks", f"/console/webhooks/{hook.id}"):
            assert new not in client.simulate_get(page, cookies=cookies).text  # shown once

        queue_test_event(postern, a_agent, hook)
        dispatch.deliver_due(postern)
        [got] = receiver.wait_for(1)
    verify_webhook(got.body, got.headers, new)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(got.body, got.headers, old)
    audited = AuditEvent.get(AuditEvent.action == "webhook.rotate_secret", AuditEvent.outcome == "ok")
    assert (audited.target, audited.token_id) == (hook.id, admin_token_id())
    assert AuditEvent.select().where(AuditEvent.code == "csrf").count() == 1


def test_rotate_with_a_grace_period_keeps_the_old_secret_signing(client, world):
    a, *_, a_hook, _ = world
    cookies = sign_in(client, a.admin_token)
    shown = post(client, f"/console/webhooks/{a_hook.id}/rotate-secret", cookies, csrf_of(client, cookies))
    assert shown.status_code == 200 and "keeps signing alongside the new one until" in shown.text
    row = Webhook.get_by_id(a_hook.id)
    assert row.previous_secret and row.previous_secret_expires_at is not None
    page = client.simulate_get(f"/console/webhooks/{a_hook.id}", cookies=cookies).text
    assert "still signs until" in page
