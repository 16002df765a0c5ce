"""``/v1/domains``: a tenant's mail domains, their DNS records and delegation, and a check."""

from __future__ import annotations

from postern.api.docs import operation, path_param, ref
from postern.core.domains import get_domain, list_domains, verify_domain
from postern.core.views import domain_json

LIST = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": ref("Domain")}}}


class DomainsResource:
    OPENAPI = {
        "get": operation(
            "List the domains this key may use, with their DNS records and delegation",
            {200: ("The domains", LIST)},
            scope="mailbox:read",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        postern = self.caller.postern
        views = await self.caller.as_agent(
            req, lambda p, i: list_domains(postern, p, i), scope="mailbox:read", action="domain.list"
        )
        resp.media = {"data": [domain_json(view) for view in views]}


class DomainResource:
    OPENAPI = {
        "get": operation(
            "Get a domain: records published, delegation the parent zone must hold, last check",
            {200: ("The domain", ref("Domain")), 404: ("No such domain for this key", ref("Error"))},
            params=(path_param("domain"),),
            scope="mailbox:read",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, domain):
        postern = self.caller.postern
        view = await self.caller.as_agent(
            req, lambda p, i: get_domain(postern, p, i, domain), scope="mailbox:read", action="domain.read"
        )
        resp.media = domain_json(view)


class DomainVerifyResource:
    OPENAPI = {
        "post": operation(
            "Check the delegation and records through the configured resolvers; store the outcome",
            {200: ("The domain with the checks", ref("Domain")), 404: ("No such domain for this key", ref("Error"))},
            params=(path_param("domain"),),
            scope="mailbox:read",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, domain):
        postern = self.caller.postern
        view = await self.caller.as_agent(
            req, lambda p, i: verify_domain(postern, p, i, domain), scope="mailbox:read", action="domain.verify"
        )
        resp.media = domain_json(view)
