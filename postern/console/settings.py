"""Console pages for a tenant's settings: its mail domains (records, zone-file text,
delegation, a check) and its webhooks (delivery log, redelivery, secret rotation).

Each page calls the core functions ``/v1/domains`` and ``/v1/webhooks`` call, as the
session's admin principal: an org admin sees its own customer's, an operator every
tenant's, and another tenant's domain or webhook is the same 404 as a missing one.
"""

from __future__ import annotations

import falcon

from postern.console.forms import read_form
from postern.console.manage import PAGE_SIZE
from postern.console.web import page
from postern.core.domains import get_domain, list_domains, verify_domain
from postern.core.errors import InvalidInput
from postern.core.views import delivery_json, domain_json, webhook_json
from postern.core.webhooks import manage
from postern.core.zones import presentation


def zone_text(view) -> str:
    """The domain's records in master-file form (RFC 1035), as ``postern admin dns
    records`` prints a whole zone: ``name. TTL IN TYPE value``."""
    lines = [f"$ORIGIN {view.zone}."]
    lines += [f"{r.name}.\t{r.ttl}\tIN\t{r.rtype}\t{presentation(r)}" for r in view.records]
    return "\n".join(lines) + "\n"


def _hook(hook) -> dict:
    """A webhook as the API shows it, with the tenant and agent it belongs to."""
    return {**webhook_json(hook), "customer_id": hook.customer_id, "agent_id": hook.agent_id}


# --- domains -------------------------------------------------------------------------------


class DomainsResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        postern = self.web.postern

        def listing(principal, info):
            return list_domains(postern, principal, info)

        session, principal, views = await self.web.act(req, listing)
        self.web.render(
            resp,
            "domains.html",
            session=session,
            principal=principal,
            domains=[domain_json(v) for v in views],
        )


class DomainResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, domain):
        postern = self.web.postern

        def read(principal, info):
            view = get_domain(postern, principal, info, domain)
            return domain_json(view), zone_text(view)

        session, principal, (found, text) = await self.web.act(req, read)
        self.web.render(resp, "domain.html", session=session, principal=principal, domain=found, zone_text=text)


class DomainVerifyResource:
    """The same check as ``POST /v1/domains/{domain}/verify``; the outcome is stored,
    so the domain page shows it after the redirect."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, domain):
        form = await read_form(req)
        postern = self.web.postern

        def verify(principal, info):
            return verify_domain(postern, principal, info, domain)

        _, _, view = await self.web.act(req, verify, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther(f"/console/domains/{view.domain}")


# --- webhooks ------------------------------------------------------------------------------


class WebhooksResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        token = req.get_param("page_token")
        session, principal, found = await self.web.act(req, manage.list_webhooks, PAGE_SIZE, token)
        self.web.render(
            resp,
            "webhooks.html",
            session=session,
            principal=principal,
            webhooks=[_hook(h) for h in found.items],
            next_page_token=found.next_page_token,
        )


class WebhookResource:
    """A webhook and its delivery log (oldest first, as the API pages it)."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, webhook_id):
        status = (req.get_param("status") or "").strip() or None
        token = req.get_param("page_token")

        def read(principal, info):
            hook = manage.get_webhook(principal, info, webhook_id, audit_read=False)
            # Audits the read of the log (and so of the webhook) with the webhook as target.
            found = manage.list_deliveries(principal, info, hook.id, status, PAGE_SIZE, token)
            return hook, found

        session, principal, (hook, found) = await self.web.act(req, read)
        self.web.render(
            resp,
            "webhook.html",
            session=session,
            principal=principal,
            webhook=_hook(hook),
            deliveries=[delivery_json(d) for d in found.items],
            next_page_token=found.next_page_token,
            status_filter=status or "",
            statuses=manage.DELIVERY_STATUSES,
            max_grace_hours=manage.MAX_GRACE // 3600,
            default_grace_hours=manage.DEFAULT_GRACE // 3600,
        )


class RedeliverResource:
    """The same retry as ``POST /v1/webhooks/{id}/deliveries/{delivery_id}/retry``: the
    delivery is due again now, with the same ``webhook-id`` and body."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, webhook_id, delivery_id):
        form = await read_form(req)
        postern = self.web.postern

        def retry(principal, info):
            return manage.retry_delivery(postern, principal, info, webhook_id, delivery_id)

        _, _, delivery = await self.web.act(req, retry, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther(f"/console/webhooks/{delivery.webhook_id}")


class RotateSecretResource:
    """The same rotation as ``POST /v1/webhooks/{id}/rotate-secret``; the new secret is
    on this response only (not cached, not stored in the clear)."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, webhook_id):
        form = await read_form(req)

        def rotate(principal, info):
            # Read inside the step, after the CSRF check: a forged request learns nothing.
            hours = _hours(form.get("grace_hours", ""))
            return manage.rotate_secret(principal, info, webhook_id, {"grace_seconds": hours * 3600})

        session, principal, (hook, secret) = await self.web.act(req, rotate, csrf=form.get("csrf"), state_changing=True)
        self.web.render(
            resp,
            "webhook_secret.html",
            session=session,
            principal=principal,
            webhook=_hook(hook),
            secret=secret,
        )


def _hours(raw: str) -> int:
    """How long the old secret keeps signing, in whole hours (empty: the API's default)."""
    most = manage.MAX_GRACE // 3600
    raw = raw.strip()
    if not raw:
        return manage.DEFAULT_GRACE // 3600
    if not (raw.isascii() and raw.isdigit()) or int(raw) > most:
        raise InvalidInput(f"the old secret keeps signing for 0 to {most} hours", field="grace_hours")
    return int(raw)


def settings_routes(web) -> list[tuple[str, object]]:
    domain = "/console/domains/{domain}"
    hook = "/console/webhooks/{webhook_id}"
    return [
        ("/console/domains", DomainsResource(web)),
        (domain, DomainResource(web)),
        (f"{domain}/verify", DomainVerifyResource(web)),
        ("/console/webhooks", WebhooksResource(web)),
        (hook, WebhookResource(web)),
        (f"{hook}/rotate-secret", RotateSecretResource(web)),
        (f"{hook}/deliveries/{{delivery_id}}/redeliver", RedeliverResource(web)),
    ]
