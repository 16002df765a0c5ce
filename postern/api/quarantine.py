"""Quarantine and the inbound policy (admin tokens only): mail an inbox's policy held
back, released or discarded by a human; the policy per customer and per inbox."""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.core import audit, quarantine
from postern.core.mail.messageview import view_of
from postern.core.models import QuarantinedMessage
from postern.core.pagination import paginate, parse_limit
from postern.core.views import inbound_policy_json, message_json, page_json, quarantined_json

POLICY_BODY = {
    "type": "object",
    "properties": {
        "dmarc_reject": {"enum": ["deliver", "quarantine", "refuse", None]},
        "unauthenticated": {"enum": ["deliver", "quarantine", "refuse", None]},
    },
    "description": "fields left out keep their value; null inherits from the level above",
}


class QuarantineResource:
    OPENAPI = {
        "get": operation(
            "List mail held back by inbound policy, oldest first",
            {200: ("A page of held messages", page_of(ref("QuarantinedMessage")))},
            params=(*PAGING, query_param("inbox_id")),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        inbox_id, limit, token = req.get_param("inbox_id"), req.get_param("limit"), req.get_param("page_token")

        def listing(principal, info):
            query = quarantine.visible_held(principal, inbox_id)
            page = paginate(query, QuarantinedMessage.created_at, QuarantinedMessage.id, parse_limit(limit), token)
            audit.record_read("quarantine.list", principal=principal, info=info, target=inbox_id)
            return page

        resp.media = page_json(await self.caller.as_admin(req, listing), quarantined_json)


class HeldResource:
    OPENAPI = {
        "get": operation(
            "Get a held message, with its text and headers",
            {200: ("The held message", ref("QuarantinedMessageDetail")), 404: ("Not found", ref("Error"))},
            params=(path_param("held_id"),),
            auth="admin",
        ),
        "delete": operation(
            "Discard a held message for good",
            {204: ("Discarded", None), 404: ("Not found", ref("Error"))},
            params=(path_param("held_id"),),
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, held_id):
        postern = self.caller.postern

        def read(principal, info):
            row = quarantine.get_held(principal, held_id)
            audit.record_read("quarantine.read", principal=principal, info=info, target=row.id)
            return row, quarantine.parsed_held(postern, row)

        row, parsed = await self.caller.as_admin(req, read)
        resp.media = quarantined_json(row, parsed)

    async def on_delete(self, req, resp, held_id):
        await self.caller.as_admin(req, quarantine.discard, held_id)
        resp.status = falcon.HTTP_204


class ReleaseResource:
    OPENAPI = {
        "post": operation(
            "Release a held message into its inbox: the agent's waits and webhooks see it as new mail",
            {200: ("The message as stored in the inbox", ref("Message")), 404: ("Not found", ref("Error"))},
            params=(path_param("held_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, held_id):
        postern = self.caller.postern

        def release(principal, info):
            return view_of(quarantine.release(postern, principal, info, held_id))

        resp.media = message_json(await self.caller.as_admin(req, release), full=True)


class PolicyResource:
    """``/v1/admin/inbound-policy`` (a customer's: ``customer_id`` for operator tokens) and
    ``/v1/admin/inboxes/{inbox_id}/inbound-policy`` (one inbox's)."""

    def __init__(self, caller, *, per_inbox: bool):
        self.caller = caller
        params = (path_param("inbox_id"),) if per_inbox else (query_param("customer_id"),)
        level = "an inbox" if per_inbox else "a customer"
        self.OPENAPI = {
            "get": operation(
                f"The inbound policy of {level}: what it sets and what applies",
                {200: ("The policy", ref("InboundPolicy")), 404: ("Not found", ref("Error"))},
                params=params,
                auth="admin",
            ),
            "put": operation(
                f"Set the inbound policy of {level}",
                {
                    200: ("The policy now", ref("InboundPolicy")),
                    404: ("Not found", ref("Error")),
                    422: ("Invalid", ref("Error")),
                },
                body=POLICY_BODY,
                params=params,
                auth="admin",
            ),
        }

    async def on_get(self, req, resp, inbox_id=None):
        postern, customer_ref = self.caller.postern, req.get_param("customer_id")

        def read(principal, info):
            return quarantine.read_policy(postern, principal, info, customer_ref, inbox_id)

        resp.media = inbound_policy_json(await self.caller.as_admin(req, read))

    async def on_put(self, req, resp, inbox_id=None):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=1024)
        postern, customer_ref = self.caller.postern, req.get_param("customer_id")

        def put(principal, info):
            return quarantine.set_policy(postern, principal, info, body, customer_ref, inbox_id)

        resp.media = inbound_policy_json(await self.caller.as_admin(req, put))


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/quarantine", QuarantineResource(caller)),
        ("/v1/admin/quarantine/{held_id}", HeldResource(caller)),
        ("/v1/admin/quarantine/{held_id}/release", ReleaseResource(caller)),
        ("/v1/admin/inbound-policy", PolicyResource(caller, per_inbox=False)),
        ("/v1/admin/inboxes/{inbox_id}/inbound-policy", PolicyResource(caller, per_inbox=True)),
    ]
