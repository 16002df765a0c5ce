"""Allow and block lists: admins manage them; an agent reads those that bind its inbox."""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.core import audit, mailrules
from postern.core.models import MailRule
from postern.core.pagination import paginate, parse_limit
from postern.core.views import mail_rule_json, page_json

FILTERS = ("direction", "action", "inbox_id", "enrollment_id")

CREATE = {
    "type": "object",
    "required": ["direction", "action", "pattern"],
    "properties": {
        "direction": {"enum": ["receive", "send"]},
        "action": {"enum": ["allow", "block"]},
        "pattern": {"type": "string", "maxLength": 320},
        "inbox_id": {"type": "string", "description": "an inbox's own entry"},
        "enrollment_id": {"type": "string", "description": "an entry for every inbox of this enrollment key"},
        "customer_id": {"type": "string", "description": "operator tokens: the customer of a customer-wide entry"},
        "description": {"type": "string", "maxLength": 200},
    },
}


class RulesResource:
    OPENAPI = {
        "get": operation(
            "List allow and block entries",
            {200: ("A page of entries", page_of(ref("MailRule")))},
            params=(*PAGING, *(query_param(f) for f in FILTERS)),
            auth="admin",
        ),
        "post": operation(
            "Add an allow or block entry for a customer, an enrollment key or an inbox",
            {201: ("Created", ref("MailRule")), 404: ("No such level", ref("Error")), 422: ("Invalid", ref("Error"))},
            body=CREATE,
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        filters = {name: req.get_param(name) for name in FILTERS}
        limit, token = req.get_param("limit"), req.get_param("page_token")

        def listing(principal, info):
            query = mailrules.visible_rules(principal, filters)
            page = paginate(query, MailRule.created_at, MailRule.id, parse_limit(limit), token)
            audit.record_read("mail_rule.list", principal=principal, info=info)
            return page

        resp.media = page_json(await self.caller.as_admin(req, listing), mail_rule_json)

    async def on_post(self, req, resp):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=4096)
        rule = await self.caller.as_admin(req, mailrules.create_rule, body)
        resp.status = falcon.HTTP_201
        resp.media = mail_rule_json(rule)


class RuleResource:
    OPENAPI = {
        "get": operation(
            "Get an allow or block entry",
            {200: ("The entry", ref("MailRule")), 404: ("Not found", ref("Error"))},
            params=(path_param("rule_id"),),
            auth="admin",
        ),
        "delete": operation(
            "Remove an allow or block entry",
            {204: ("Removed", None), 404: ("Not found", ref("Error"))},
            params=(path_param("rule_id"),),
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, rule_id):
        def read(principal, info):
            rule = mailrules.get_rule(principal, rule_id)
            audit.record_read("mail_rule.read", principal=principal, info=info, target=rule.id)
            return rule

        resp.media = mail_rule_json(await self.caller.as_admin(req, read))

    async def on_delete(self, req, resp, rule_id):
        await self.caller.as_admin(req, mailrules.delete_rule, rule_id)
        resp.status = falcon.HTTP_204


class InboxRulesResource:
    OPENAPI = {
        "get": operation(
            "The allow and block entries that bind this inbox (read-only for agents)",
            {200: ("Every entry that applies, both directions", ref("MailRules")), 404: ("Not found", ref("Error"))},
            params=(path_param("inbox_id"),),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        found = await self.caller.as_agent(
            req, mailrules.rules_of_inbox, inbox_id, scope="mailbox:read", action="mail_rule.list"
        )
        resp.media = {"data": [mail_rule_json(r) for r in found]}


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/mail-rules", RulesResource(caller)),
        ("/v1/admin/mail-rules/{rule_id}", RuleResource(caller)),
        ("/v1/inboxes/{inbox_id}/mail-rules", InboxRulesResource(caller)),
    ]
