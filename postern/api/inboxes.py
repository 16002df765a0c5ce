"""``/v1/inboxes``: create, list, get and delete inboxes with an agent key."""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, ref
from postern.core.inboxes import create_inbox, delete_inbox, get_inbox, list_inboxes
from postern.core.mail import cursors
from postern.core.views import inbox_json, page_json

CREATE_REQUEST = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "maxLength": 64, "description": "local part; default: the agent's handle"},
        "domain": {"type": "string", "description": "one of the enrollment's allowed domains"},
        "display_name": {"type": "string", "maxLength": 200},
        "client_id": {"type": "string", "maxLength": 200, "description": "makes retries idempotent"},
    },
    "additionalProperties": False,
}


class InboxesResource:
    OPENAPI = {
        "post": operation(
            "Create an inbox (idempotent with client_id)",
            {
                201: ("Created", ref("Inbox")),
                200: ("An inbox with this client_id already existed", ref("Inbox")),
                403: ("Missing scope mailbox:create, quota exceeded, or a reserved local part", ref("Error")),
                409: ("Address taken", ref("Error")),
                422: ("A field is invalid", ref("Error")),
            },
            body=CREATE_REQUEST,
            scope="mailbox:create",
        ),
        "get": operation(
            "List inboxes",
            {200: ("A page of inboxes", page_of(ref("Inbox")))},
            params=PAGING,
            scope="mailbox:read",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp):
        await self.caller.check(req, "agent", "mailbox:create", "inbox.create")
        body = await read_json(req, max_bytes=8192)
        postern = self.caller.postern

        def create(principal, info):
            inbox, created = create_inbox(postern, principal, info, body)
            # Where this agent's waits start: 0 for a new inbox, so the first wait
            # returns mail that arrived before it (docs/mail.md, "Delivery cursors").
            return inbox, created, 0 if created else cursors.position(principal.agent_id, inbox.id)

        inbox, created, cursor = await self.caller.as_agent(req, create, scope="mailbox:create", action="inbox.create")
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = {**inbox_json(inbox), "cursor": str(cursor)}

    async def on_get(self, req, resp):
        limit, token = req.get_param("limit"), req.get_param("page_token")
        page = await self.caller.as_agent(req, list_inboxes, limit, token, scope="mailbox:read", action="inbox.list")
        resp.media = page_json(page, inbox_json)


class InboxResource:
    OPENAPI = {
        "get": operation(
            "Get an inbox",
            {200: ("The inbox", ref("Inbox")), 404: ("No such inbox for this key", ref("Error"))},
            params=(path_param("inbox_id"),),
            scope="mailbox:read",
        ),
        "delete": operation(
            "Delete an inbox and free its mailbox slot",
            {204: ("Deleted", None), 404: ("No such inbox for this key", ref("Error"))},
            params=(path_param("inbox_id"),),
            scope="mailbox:create",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        inbox = await self.caller.as_agent(req, get_inbox, inbox_id, scope="mailbox:read", action="inbox.read")
        resp.media = inbox_json(inbox)

    async def on_delete(self, req, resp, inbox_id):
        postern = self.caller.postern
        await self.caller.as_agent(
            req, lambda p, i: delete_inbox(postern, p, i, inbox_id), scope="mailbox:create", action="inbox.delete"
        )
        resp.status = falcon.HTTP_204
