"""The admin API (``pk_admin_…`` tokens only): customers, enrollment keys, agents, audit."""

from __future__ import annotations

import datetime as dt

import falcon

from postern.api.bodies import read_json, reject_unknown
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.api.inboxes import CREATE_REQUEST
from postern.core import audit, enrollment, tenancy, tenantdeletion
from postern.core.auditlog import FILTERS, query_audit
from postern.core.errors import InvalidInput
from postern.core.inboxes import create_inbox_for_agent
from postern.core.models import Agent, Customer, EnrollmentKey
from postern.core.pagination import paginate, parse_limit
from postern.core.views import (
    agent_json,
    agent_key_json,
    audit_json,
    customer_json,
    enrollment_key_json,
    inbox_json,
    page_json,
)


async def _list(caller, req, resp, visible, model, action: str, to_json) -> None:
    """A paged, audited listing of what ``visible(principal)`` selects, oldest first."""
    limit, token = req.get_param("limit"), req.get_param("page_token")

    def listing(principal, info):
        page = paginate(visible(principal), model.created_at, model.id, parse_limit(limit), token)
        _audited_read(principal, info, action)
        return page

    resp.media = page_json(await caller.as_admin(req, listing), to_json)


def _audited_read(principal, info, action, target=None):
    audit.record_read(action, principal=principal, info=info, target=target)


class CustomersResource:
    OPENAPI = {
        "post": operation(
            "Create a customer (operator tokens only)",
            {201: ("Created", ref("Customer")), 409: ("Label taken", ref("Error"))},
            body={
                "type": "object",
                "required": ["label"],
                "properties": {"label": {"type": "string", "maxLength": 63}, "name": {"type": "string"}},
            },
            auth="admin",
        ),
        "get": operation(
            "List customers this token may see",
            {200: ("A page of customers", page_of(ref("Customer")))},
            params=PAGING,
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=4096)
        reject_unknown(body, {"label", "name"})
        label, name = body.get("label"), body.get("name")
        if not isinstance(label, str):
            raise InvalidInput("label is required", field="label")
        if name is not None and not isinstance(name, str):
            raise InvalidInput("name must be a string", field="name")
        customer = await self.caller.as_admin(req, tenancy.create_customer, label, name or label)
        resp.status = falcon.HTTP_201
        resp.media = customer_json(customer)

    async def on_get(self, req, resp):
        await _list(self.caller, req, resp, tenancy.visible_customers, Customer, "customer.list", customer_json)


class CustomerResource:
    OPENAPI = {
        "delete": operation(
            "Delete a suspended customer and everything it owns (operator tokens only)",
            {
                204: ("Deleted", None),
                404: ("Not found", ref("Error")),
                409: ("Not suspended first", ref("Error")),
            },
            params=(path_param("customer_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_delete(self, req, resp, customer_id):
        postern = self.caller.postern

        def delete(principal, info):
            tenantdeletion.delete_customer(postern, principal, info, customer_id)

        await self.caller.as_admin(req, delete)
        resp.status = falcon.HTTP_204


class CustomerSuspensionResource:
    """``…/suspend`` and ``…/resume``: one resource, the state it sets fixed per route."""

    def __init__(self, caller, suspended: bool):
        self.caller = caller
        self.suspended = suspended
        verb = "Suspend" if suspended else "Resume"
        self.OPENAPI = {
            "post": operation(
                f"{verb} a customer (operator tokens only)"
                + (": its keys are refused, inbound mail deferred, queued mail held" if suspended else ""),
                {200: ("The customer", ref("Customer")), 404: ("Not found", ref("Error"))},
                params=(path_param("customer_id"),),
                auth="admin",
            )
        }

    async def on_post(self, req, resp, customer_id):
        customer = await self.caller.as_admin(req, tenancy.set_suspended, customer_id, self.suspended)
        resp.media = customer_json(customer)


MAX_EXPIRES_IN = 366 * 86400

ENROLLMENT_REQUEST = {
    "type": "object",
    "required": ["scopes", "max_mailboxes"],
    "properties": {
        "customer_id": {"type": "string", "description": "required for operator tokens; implied for org tokens"},
        "scopes": {"type": "array", "items": {"enum": ["mailbox:create", "mailbox:read", "mailbox:send"]}},
        "max_mailboxes": {"type": "integer", "minimum": 0},
        "expires_in": {"type": "integer", "minimum": 60, "description": "seconds; default 7 days"},
        "allowed_domains": {"type": "array", "items": {"type": "string"}},
        "max_redemptions": {"type": ["integer", "null"], "minimum": 1},
        "description": {"type": "string", "maxLength": 200},
        "require_approval": {
            "type": "boolean",
            "description": "outbound mail of its inboxes waits for an operator or org admin (docs/mail.md)",
        },
    },
}


class EnrollmentKeysResource:
    OPENAPI = {
        "post": operation(
            "Mint an enrollment key (the key is shown once)",
            {201: ("Created; enrollment_key holds the key", ref("EnrollmentKeyCreated"))},
            body=ENROLLMENT_REQUEST,
            auth="admin",
        ),
        "get": operation(
            "List enrollment keys",
            {200: ("A page of enrollment keys", page_of(ref("EnrollmentKey")))},
            params=PAGING,
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=16384)
        reject_unknown(body, set(ENROLLMENT_REQUEST["properties"]))
        base_domain = self.caller.postern.config.mail.domain
        expires_in = body.get("expires_in", 7 * 86400)
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 60 <= expires_in <= MAX_EXPIRES_IN:
            raise InvalidInput(
                f"expires_in must be an integer number of seconds from 60 to {MAX_EXPIRES_IN}", field="expires_in"
            )
        domains = body.get("allowed_domains")
        if domains is not None and not isinstance(domains, list):
            raise InvalidInput("allowed_domains must be a list of domains", field="allowed_domains")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise InvalidInput("description must be a string", field="description")

        def mint(principal, info):
            customer_ref = body.get("customer_id") or principal.customer_id
            if not isinstance(customer_ref, str):
                raise InvalidInput("customer_id is required with an operator token", field="customer_id")
            customer = tenancy.get_customer(principal, customer_ref)
            return enrollment.create_enrollment_key(
                principal,
                info,
                customer,
                base_domain=base_domain,
                scopes=body.get("scopes"),
                max_mailboxes=body.get("max_mailboxes"),
                expires_in=dt.timedelta(seconds=expires_in),
                domains=domains,
                max_redemptions=body.get("max_redemptions"),
                description=description,
                require_approval=body.get("require_approval", False),
            )

        key, plaintext = await self.caller.as_admin(req, mint)
        resp.status = falcon.HTTP_201
        resp.media = {**enrollment_key_json(key), "enrollment_key": plaintext}

    async def on_get(self, req, resp):
        await _list(
            self.caller,
            req,
            resp,
            enrollment.visible_enrollment_keys,
            EnrollmentKey,
            "enrollment_key.list",
            enrollment_key_json,
        )


class EnrollmentKeyResource:
    OPENAPI = {
        "get": operation(
            "Get an enrollment key",
            {200: ("The key (never its secret)", ref("EnrollmentKey")), 404: ("Not found", ref("Error"))},
            params=(path_param("key_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, key_id):
        def read(principal, info):
            key = enrollment.get_enrollment_key(principal, key_id)
            _audited_read(principal, info, "enrollment_key.read", key.id)
            return key

        resp.media = enrollment_key_json(await self.caller.as_admin(req, read))


class EnrollmentKeyRevokeResource:
    OPENAPI = {
        "post": operation(
            "Revoke an enrollment key; optionally every agent key it minted",
            {200: ("Revoked", ref("EnrollmentKeyRevoked")), 404: ("Not found", ref("Error"))},
            params=(path_param("key_id"),),
            body={"type": "object", "properties": {"revoke_agent_keys": {"type": "boolean"}}},
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, key_id):
        await self.caller.check(req, "admin")
        # An empty body (no content type, no bytes) means the defaults.
        empty = req.content_type is None and not req.content_length
        body = {} if empty else await read_json(req, max_bytes=1024)
        reject_unknown(body, {"revoke_agent_keys"})
        cascade = body.get("revoke_agent_keys", False)
        if not isinstance(cascade, bool):
            raise InvalidInput("revoke_agent_keys must be true or false", field="revoke_agent_keys")

        def revoke(principal, info):
            count = enrollment.revoke_enrollment_key(principal, info, key_id, revoke_agent_keys=cascade)
            return enrollment.get_enrollment_key(principal, key_id), count

        key, count = await self.caller.as_admin(req, revoke)
        resp.media = {**enrollment_key_json(key), "agent_keys_revoked": count}


class AgentsResource:
    OPENAPI = {
        "get": operation(
            "List agents",
            {200: ("A page of agents", page_of(ref("Agent")))},
            params=(*PAGING, query_param("enrollment_id")),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        enrollment_id = req.get_param("enrollment_id")

        def visible(principal):
            query = enrollment.visible_agents(principal)
            return query.where(Agent.enrollment == enrollment_id) if enrollment_id else query

        await _list(self.caller, req, resp, visible, Agent, "agent.list", agent_json)


class AgentResource:
    OPENAPI = {
        "get": operation(
            "Get an agent with its keys (prefixes only)",
            {200: ("The agent", ref("Agent")), 404: ("Not found", ref("Error"))},
            params=(path_param("agent_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, agent_id):
        def read(principal, info):
            agent = enrollment.get_agent(principal, agent_id)
            _audited_read(principal, info, "agent.read", agent.id)
            return agent, list(agent.keys)

        agent, keys = await self.caller.as_admin(req, read)
        resp.media = agent_json(agent, keys)


class AgentInboxesResource:
    """The admin path to an inbox: the same core call as ``POST /v1/inboxes``, for one
    agent of the token's tenant, and the only path to reserved local parts."""

    OPENAPI = {
        "post": operation(
            "Create an inbox for an agent (reserved role addresses such as postmaster too)",
            {
                201: ("Created", ref("Inbox")),
                200: ("An inbox with this client_id already existed", ref("Inbox")),
                403: ("Mailbox quota of the agent's enrollment exceeded", ref("Error")),
                404: ("No such agent for this token", ref("Error")),
                409: ("Address taken, or the agent's enrollment key is revoked", ref("Error")),
                422: ("A field is invalid", ref("Error")),
            },
            body=CREATE_REQUEST,
            params=(path_param("agent_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, agent_id):
        await self.caller.check(req, "admin")  # who asks before what the body says
        body = await read_json(req, max_bytes=8192)
        postern = self.caller.postern

        def create(principal, info):
            return create_inbox_for_agent(postern, principal, info, agent_id, body)

        inbox, created = await self.caller.as_admin(req, create)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = inbox_json(inbox)


class AgentKeyRevokeResource:
    OPENAPI = {
        "post": operation(
            "Revoke one agent key",
            {200: ("Revoked", ref("AgentKey")), 404: ("Not found", ref("Error"))},
            params=(path_param("key_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, key_id):
        resp.media = agent_key_json(await self.caller.as_admin(req, enrollment.revoke_agent_key, key_id))


class AuditResource:
    OPENAPI = {
        "get": operation(
            "Read the audit log, newest first",
            {200: ("A page of audit events", page_of(ref("AuditEvent")))},
            params=(*PAGING, *(query_param(f) for f in (*FILTERS, "since", "until"))),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        filters = {name: req.get_param(name) for name in (*FILTERS, "since", "until")}
        limit, token = req.get_param("limit"), req.get_param("page_token")

        def read(principal, info):
            page = query_audit(principal, filters, limit, token)
            _audited_read(principal, info, "audit.read")
            return page

        resp.media = page_json(await self.caller.as_admin(req, read), audit_json)
