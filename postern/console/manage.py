"""Console pages for the tenancy side: overview, customers, enrollment keys, agents, audit.

Each page calls the core functions the admin API calls, as the session's principal.
"""

from __future__ import annotations

import datetime as dt

import falcon

from postern.api.health import health_snapshot, not_serving
from postern.console.forms import many, read_form
from postern.console.web import page
from postern.core import audit, enrollment, tenancy, tenantdeletion
from postern.core.auditlog import query_audit
from postern.core.errors import InvalidInput
from postern.core.inboxes import visible_inboxes
from postern.core.mail.outcome import outbound_mode
from postern.core.models import Agent, Customer, EnrollmentKey, Inbox, Message
from postern.core.pagination import paginate, parse_limit
from postern.core.principal import SCOPES
from postern.core.views import agent_json, audit_json, customer_json, enrollment_key_json, inbox_json

PAGE_SIZE = 50


def audited_page(query, model, token, action: str, principal, info):
    """A page of ``query`` (oldest first, as the admin API lists), its read audited as
    ``action`` the way the API's listing is."""
    found = paginate(query, model.created_at, model.id, parse_limit(PAGE_SIZE), token)
    audit.record_read(action, principal=principal, info=info)
    return found


def _int(form: dict, name: str, default: int | None = None) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number", field=name) from None


class OverviewResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        def overview(principal, info):
            inboxes = visible_inboxes(principal)
            counts = {
                "customers": tenancy.visible_customers(principal).count(),
                "enrollment_keys": enrollment.visible_enrollment_keys(principal).count(),
                "agents": enrollment.visible_agents(principal).count(),
                "inboxes": inboxes.count(),
                "messages": Message.select().where(Message.inbox.in_(inboxes.select(Inbox.id))).count(),
            }
            recent = query_audit(principal, {}, 10, None).items
            audit.record_read("console.overview", principal=principal, info=info)
            return counts, health_snapshot(), [audit_json(e) for e in recent]

        session, principal, (counts, health, recent) = await self.web.act(req, overview)
        degraded = [s for s in health["services"] if not_serving(s)]
        self.web.render(
            resp,
            "overview.html",
            session=session,
            principal=principal,
            counts=counts,
            health=health,
            degraded=degraded,
            outbound=outbound_mode(self.web.postern).as_json(with_route=principal.is_operator),
            recent=recent,
        )


class CustomersResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        token = req.get_param("page_token")

        def listing(principal, info):
            return audited_page(tenancy.visible_customers(principal), Customer, token, "customer.list", principal, info)

        session, principal, found = await self.web.act(req, listing)
        self.web.render(
            resp,
            "customers.html",
            session=session,
            principal=principal,
            customers=[customer_json(c) for c in found.items],
            next_page_token=found.next_page_token,
        )

    @page
    async def on_post(self, req, resp):
        form = await read_form(req)
        label, name = form.get("label", "").strip(), form.get("name", "").strip()
        await self.web.act(
            req,
            tenancy.create_customer,
            label,
            name or label,
            csrf=form.get("csrf"),
            state_changing=True,
        )
        raise falcon.HTTPSeeOther("/console/customers")


class CustomerSuspensionResource:
    def __init__(self, web, suspended: bool):
        self.web = web
        self.suspended = suspended

    @page
    async def on_post(self, req, resp, customer_id):
        form = await read_form(req)
        await self.web.act(
            req, tenancy.set_suspended, customer_id, self.suspended, csrf=form.get("csrf"), state_changing=True
        )
        raise falcon.HTTPSeeOther("/console/customers")


class CustomerDeleteResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, customer_id):
        form = await read_form(req)
        postern = self.web.postern

        def delete(principal, info):
            tenantdeletion.delete_customer(postern, principal, info, customer_id)

        await self.web.act(req, delete, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/customers")


class EnrollmentKeysResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        token = req.get_param("page_token")

        def listing(principal, info):
            keys = enrollment.visible_enrollment_keys(principal)
            found = audited_page(keys, EnrollmentKey, token, "enrollment_key.list", principal, info)
            return found, list(tenancy.visible_customers(principal).limit(500))

        session, principal, (found, customers) = await self.web.act(req, listing)
        self.web.render(
            resp,
            "keys.html",
            session=session,
            principal=principal,
            keys=[enrollment_key_json(k) for k in found.items],
            next_page_token=found.next_page_token,
            customers=[customer_json(c) for c in customers],
            scopes=SCOPES,
        )

    @page
    async def on_post(self, req, resp):
        form = await read_form(req)
        base_domain = self.web.postern.config.mail.domain
        scopes = [s for s in SCOPES if form.get(f"scope:{s}") == "on"]
        max_mailboxes = _int(form, "max_mailboxes", 1)
        days = _int(form, "expires_days", 7)
        if days is None or not 1 <= days <= 366:
            raise InvalidInput("a key expires in 1 to 366 days", field="expires_days")

        def mint(principal, info):
            customer_ref = form.get("customer_id") or principal.customer_id
            if not customer_ref:
                raise InvalidInput("choose the customer the key is for", field="customer_id")
            customer = tenancy.get_customer(principal, customer_ref)
            return enrollment.create_enrollment_key(
                principal,
                info,
                customer,
                base_domain=base_domain,
                scopes=scopes,
                max_mailboxes=max_mailboxes,
                expires_in=dt.timedelta(days=days),
                domains=many(form.get("allowed_domains", "")) or None,
                max_redemptions=_int(form, "max_redemptions"),
                description=form.get("description", "")[:200],
            )

        session, principal, (key, plaintext) = await self.web.act(req, mint, csrf=form.get("csrf"), state_changing=True)
        # Shown once, on this response only: the page is not cached and the key is not stored.
        self.web.render(
            resp,
            "key_created.html",
            http_status=falcon.HTTP_201,
            session=session,
            principal=principal,
            key=enrollment_key_json(key),
            plaintext=plaintext,
        )


class EnrollmentKeyRevokeResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, key_id):
        form = await read_form(req)
        cascade = form.get("revoke_agent_keys") == "on"

        def revoke(principal, info):
            return enrollment.revoke_enrollment_key(principal, info, key_id, revoke_agent_keys=cascade)

        await self.web.act(req, revoke, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/keys")


class AgentsResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        token, enrollment_id = req.get_param("page_token"), req.get_param("enrollment_id")

        def listing(principal, info):
            query = enrollment.visible_agents(principal)
            if enrollment_id:
                query = query.where(Agent.enrollment == enrollment_id)
            return audited_page(query, Agent, token, "agent.list", principal, info)

        session, principal, found = await self.web.act(req, listing)
        self.web.render(
            resp,
            "agents.html",
            session=session,
            principal=principal,
            agents=[agent_json(a) for a in found.items],
            next_page_token=found.next_page_token,
            enrollment_id=enrollment_id,
        )


class AgentResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, agent_id):
        def read(principal, info):
            agent = enrollment.get_agent(principal, agent_id)
            audit.record_read("agent.read", principal=principal, info=info, target=agent.id)
            inboxes = list(visible_inboxes(principal).where(Inbox.agent == agent.id).limit(200))
            return agent_json(agent, list(agent.keys)), [inbox_json(i) for i in inboxes]

        session, principal, (agent, inboxes) = await self.web.act(req, read)
        self.web.render(resp, "agent.html", session=session, principal=principal, agent=agent, inboxes=inboxes)


class AgentKeyRevokeResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, key_id):
        form = await read_form(req)
        _, _, key = await self.web.act(
            req, enrollment.revoke_agent_key, key_id, csrf=form.get("csrf"), state_changing=True
        )
        raise falcon.HTTPSeeOther(f"/console/agents/{key.agent_id}")


AUDIT_FILTERS = ("customer_id", "agent_id", "action", "outcome", "since", "until")


class AuditResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        filters = {name: (req.get_param(name) or "").strip() for name in AUDIT_FILTERS}
        token = req.get_param("page_token")

        def read(principal, info):
            found = query_audit(principal, {k: v for k, v in filters.items() if v}, PAGE_SIZE, token)
            audit.record_read("audit.read", principal=principal, info=info)
            return found

        session, principal, found = await self.web.act(req, read)
        self.web.render(
            resp,
            "audit.html",
            session=session,
            principal=principal,
            events=[audit_json(e) for e in found.items],
            next_page_token=found.next_page_token,
            filters=filters,
        )
