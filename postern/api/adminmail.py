"""Inboxes and their mail for admin tokens: the agent routes' core calls, which take an
admin principal and keep it to its tenant (an operator token sees every tenant)."""

from __future__ import annotations

import falcon

from postern.api.admin import _list
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.api.messages import LIST_FILTERS, MAX_LENGTH, list_filters, parse_max_length
from postern.core.inboxes import INBOX_FILTERS, MAX_ADDRESS, delete_inbox, get_inbox, search_inboxes
from postern.core.mail import deletion, reading
from postern.core.models import Inbox
from postern.core.views import inbox_json, message_json, page_json, thread_json

INBOX = path_param("inbox_id")
NOT_FOUND = ("No such inbox for this token", ref("Error"))


class InboxesResource:
    OPENAPI = {
        "get": operation(
            "List inboxes, oldest first; q matches part of the address",
            {200: ("A page of inboxes", page_of(ref("Inbox"))), 422: ("A filter is invalid", ref("Error"))},
            params=(
                *PAGING,
                *(query_param(f) for f in INBOX_FILTERS if f != "q"),
                query_param("q", {"type": "string", "maxLength": MAX_ADDRESS, "description": "part of the address"}),
            ),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        filters = {name: req.get_param(name) for name in INBOX_FILTERS}
        await _list(self.caller, req, resp, lambda p: search_inboxes(p, filters), Inbox, "inbox.list", inbox_json)


class InboxResource:
    OPENAPI = {
        "get": operation(
            "Get an inbox",
            {200: ("The inbox", ref("Inbox")), 404: NOT_FOUND},
            params=(INBOX,),
            auth="admin",
        ),
        "delete": operation(
            "Delete an inbox, its mail with it, and free its mailbox slot",
            {204: ("Deleted", None), 404: NOT_FOUND},
            params=(INBOX,),
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        resp.media = inbox_json(await self.caller.as_admin(req, get_inbox, inbox_id))

    async def on_delete(self, req, resp, inbox_id):
        postern = self.caller.postern
        await self.caller.as_admin(req, lambda p, i: delete_inbox(postern, p, i, inbox_id))
        resp.status = falcon.HTTP_204


class MessagesResource:
    OPENAPI = {
        "get": operation(
            "List an inbox's messages, newest first",
            {200: ("A page of message summaries", page_of(ref("MessageSummary"))), 404: NOT_FOUND},
            params=(INBOX, *PAGING, *LIST_FILTERS),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        limit, token = req.get_param("limit"), req.get_param("page_token")
        page = await self.caller.as_admin(req, reading.list_messages, inbox_id, list_filters(req), limit, token)
        resp.media = page_json(page, message_json)


class MessageResource:
    OPENAPI = {
        "get": operation(
            "Get a message: headers, text, html, attachment metadata",
            {200: ("The message", ref("Message")), 404: ("No such inbox, or no such message in it", ref("Error"))},
            params=(INBOX, path_param("message_id"), MAX_LENGTH),
            auth="admin",
        ),
        "delete": operation(
            "Delete a message, its attachments and its download links, for good",
            {
                204: ("Deleted", None),
                404: ("No such inbox, or no such message in it", ref("Error")),
                409: ("The message is still being sent (queued or sending)", ref("Error")),
            },
            params=(INBOX, path_param("message_id")),
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id, message_id):
        max_length = parse_max_length(req.get_param("max_length"))
        view = await self.caller.as_admin(req, reading.get_message, inbox_id, message_id)
        resp.media = message_json(view, full=True, max_length=max_length)

    async def on_delete(self, req, resp, inbox_id, message_id):
        postern = self.caller.postern
        await self.caller.as_admin(req, lambda p, i: deletion.delete_message(postern, p, i, inbox_id, message_id))
        resp.status = falcon.HTTP_204


class ThreadsResource:
    OPENAPI = {
        "get": operation(
            "List an inbox's threads, most recently active first",
            {200: ("A page of threads", page_of(ref("Thread"))), 404: NOT_FOUND},
            params=(INBOX, *PAGING),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        limit, token = req.get_param("limit"), req.get_param("page_token")
        page = await self.caller.as_admin(req, reading.list_threads, inbox_id, limit, token)
        resp.media = page_json(page, thread_json)


def routes(caller) -> list[tuple[str, object]]:
    inbox = "/v1/admin/inboxes/{inbox_id}"
    return [
        ("/v1/admin/inboxes", InboxesResource(caller)),
        (inbox, InboxResource(caller)),
        (f"{inbox}/messages", MessagesResource(caller)),
        (f"{inbox}/messages/{{message_id}}", MessageResource(caller)),
        (f"{inbox}/threads", ThreadsResource(caller)),
    ]
