"""``/v1/inboxes``: create, list, get and delete inboxes with an agent key."""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, ref
from postern.core.auth import require_scope
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

        def create(principal, info):  # scope checked above; a key's scopes never change
            inbox, created = create_inbox(postern, principal, info, body)
            # Where this agent's waits start: 0 for a new inbox, so the first wait
            # returns mail that arrived before it (docs/mail.md, "Delivery cursors").
            return inbox, created, 0 if created else cursors.position(principal.agent_id, inbox.id)

        inbox, created, cursor = await self.caller.as_agent(req, create)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = {**inbox_json(inbox), "cursor": str(cursor)}

    async def on_get(self, req, resp):
        limit, token = req.get_param("limit"), req.get_param("page_token")

        def listing(principal, info):
            require_scope(principal, "mailbox:read", info, "inbox.list")
            return list_inboxes(principal, info, limit, token)

        resp.media = page_json(await self.caller.as_agent(req, listing), inbox_json)


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
        def read(principal, info):
            require_scope(principal, "mailbox:read", info, "inbox.read", inbox_id)
            return get_inbox(principal, info, inbox_id)

        resp.media = inbox_json(await self.caller.as_agent(req, read))

    async def on_delete(self, req, resp, inbox_id):
        postern = self.caller.postern

        def delete(principal, info):
            require_scope(principal, "mailbox:create", info, "inbox.delete", inbox_id)
            delete_inbox(postern, principal, info, inbox_id)

        await self.caller.as_agent(req, delete)
        resp.status = falcon.HTTP_204
