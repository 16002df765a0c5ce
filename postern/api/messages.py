"""Mail over HTTP: messages (read, send, delete), threads, and ``wait_for_email``."""

from __future__ import annotations

import asyncio

import falcon
import orjson

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.core.db import GroupCommitter
from postern.core.doorbell import Departure
from postern.core.errors import InvalidInput
from postern.core.mail import codewait, cursors, deletion, outbound, reading
from postern.core.mail.messageview import view_of
from postern.core.readbatch import ReadBatcher
from postern.core.views import message_json, page_json, thread_json

DEFAULT_WAIT = 30
MAX_WAIT = 300
WAIT_BATCH = 50


INBOX = path_param("inbox_id")
# Shared with the admin routes to the same core calls (api/adminmail.py).
LIST_FILTERS = (
    query_param("thread_id"),
    query_param("direction", {"enum": ["inbound", "outbound"]}),
    query_param("received_after", {"type": "string", "format": "date-time"}),
)
MAX_LENGTH = query_param("max_length", {"type": "integer", "minimum": 1})


SEND_REQUEST = {
    "type": "object",
    "properties": {
        "to": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/Person"}]}},
        "cc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/Person"}]}},
        "bcc": {"type": "array", "items": {"type": "string"}},
        "subject": {
            "type": "string",
            "maxLength": 998,
            "description": "Text, sent as written; a control character, or an encoded word hiding one, is a 422",
        },
        "text": {"type": "string"},
        "html": {"type": "string"},
        "reply_to": {"type": "array", "items": {"type": "string"}},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "X-… headers only; values are text, as subject",
        },
        "attachments": {"type": "array", "items": ref("OutboundAttachment")},
        "bulk": {
            "type": "boolean",
            "description": "Bulk mail (a newsletter, a notice to many): each outside recipient gets a copy "
            "with its own one-click unsubscribe link; implied above [mail] bulk_recipients recipients",
        },
    },
    "additionalProperties": False,
}
REPLY_REQUEST = {
    "type": "object",
    "properties": {
        "reply_all": {"type": "boolean"},
        **{k: SEND_REQUEST["properties"][k] for k in ("cc", "bcc", "text", "html", "headers", "attachments")},
    },
    "additionalProperties": False,
}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
SEND_RESPONSES = {
    201: (
        "Stored and handed on; status is sent, captured (kept, not sent: no outbound route), sending "
        "(confirming), queued (retrying) or failed; left_server says whether it left this server",
        ref("Message"),
    ),
    202: (
        "Held for human approval (status pending_approval): nothing is sent until an operator or org admin "
        'approves it; review_note and status tell the outcome (docs/mail.md, "Human approval")',
        ref("Message"),
    ),
    200: ("A retry with the same Idempotency-Key: the first result", ref("Message")),
    403: ("Missing scope mailbox:send", ref("Error")),
    409: ("Idempotency-Key reused for a different request", ref("Error")),
    422: ("A field is invalid", ref("Error")),
}


async def _send(caller, req, resp, inbox_id, reply_to=None):
    await caller.check(req, "agent", "mailbox:send", "message.send")
    body = await read_json(req, max_bytes=caller.postern.config.mail.max_message_bytes * 4 // 3 + 65536)
    postern, key = caller.postern, req.get_header("Idempotency-Key")

    # The scope was checked before the body was read; the action authenticates and
    # checks again so a key revoked meanwhile stops it.
    def work(principal, info):
        message, replayed = outbound.send(
            postern, principal, info, inbox_id, body, idempotency_key=key, reply_to_message=reply_to, attempt_now=False
        )
        pending = not replayed and message.status == "queued"  # all-local sends are done already
        return (message if pending else view_of(message)), pending, replayed

    view, pending, replayed = await caller.as_agent(req, work, scope="mailbox:send", action="message.send")
    if pending:
        # The first attempt talks to the send backend (a smarthost can take its whole
        # timeout to answer): on a pool of its own, so a stuck relay holds only sends,
        # never the database threads every other request needs.
        view = await caller.deliveries.run(lambda: view_of(outbound.first_attempt(postern, view)))
    held = view.message.status == "pending_approval"  # accepted, waiting for a human: nothing sent yet
    resp.status = falcon.HTTP_200 if replayed else falcon.HTTP_202 if held else falcon.HTTP_201
    resp.media = message_json(view, full=True)


class MessagesResource:
    RATE_CLASSES = {"POST": "send"}  # docs/limits.md
    OPENAPI = {
        "post": operation(
            "Send a message (Idempotency-Key makes retries safe)",
            SEND_RESPONSES,
            body=SEND_REQUEST,
            params=(path_param("inbox_id"), IDEMPOTENCY),
            scope="mailbox:send",
        ),
        "get": operation(
            "List messages, newest first",
            {200: ("A page of message summaries", page_of(ref("MessageSummary")))},
            params=(INBOX, *PAGING, *LIST_FILTERS),
            scope="mailbox:read",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, inbox_id):
        await _send(self.caller, req, resp, inbox_id)

    async def on_get(self, req, resp, inbox_id):
        filters = list_filters(req)
        page = await self.caller.as_agent(
            req,
            reading.list_messages,
            inbox_id,
            filters,
            req.get_param("limit"),
            req.get_param("page_token"),
            scope="mailbox:read",
            action="message.list",
        )
        resp.media = page_json(page, message_json)


class MessageResource:
    OPENAPI = {
        "get": operation(
            "Get a message: headers, text, html, attachment metadata",
            {200: ("The message", ref("Message")), 404: ("No such message in this inbox", ref("Error"))},
            params=(INBOX, path_param("message_id"), MAX_LENGTH),
            scope="mailbox:read",
        ),
        # mailbox:create, as for deleting an inbox: the scope that makes and unmakes
        # what an inbox holds, so a read-only key can never destroy mail (docs/retention.md).
        "delete": operation(
            "Delete a message, its attachments and its download links, for good",
            {
                204: ("Deleted", None),
                404: ("No such message in this inbox", ref("Error")),
                409: ("The message is still being sent (queued or sending)", ref("Error")),
            },
            params=(INBOX, path_param("message_id")),
            scope="mailbox:create",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id, message_id):
        max_length = parse_max_length(req.get_param("max_length"))
        view = await self.caller.as_agent(
            req, reading.get_message, inbox_id, message_id, scope="mailbox:read", action="message.read"
        )
        resp.media = message_json(view, full=True, max_length=max_length)

    async def on_delete(self, req, resp, inbox_id, message_id):
        postern = self.caller.postern
        await self.caller.as_agent(
            req,
            lambda p, i: deletion.delete_message(postern, p, i, inbox_id, message_id),
            scope="mailbox:create",
            action="message.delete",
        )
        resp.status = falcon.HTTP_204


def list_filters(req) -> dict:
    return {p["name"]: req.get_param(p["name"]) for p in LIST_FILTERS}


def parse_max_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 10**9:
        raise InvalidInput("max_length must be a positive integer", field="max_length")
    return int(value)


class ReplyResource:
    RATE_CLASSES = {"POST": "send"}  # docs/limits.md
    OPENAPI = {
        "post": operation(
            "Reply in the same thread (reply_all adds the other recipients)",
            SEND_RESPONSES,
            body=REPLY_REQUEST,
            params=(INBOX, path_param("message_id"), IDEMPOTENCY),
            scope="mailbox:send",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, inbox_id, message_id):
        await _send(self.caller, req, resp, inbox_id, reply_to=message_id)


async def _client_leaves(req, gone: Departure) -> None:
    """Return when the client disconnects, and set ``gone`` so the wait notices.

    A client that gives up (its own timeout, a crash) would otherwise hold a parked
    waiter, re-reading on every ring, for up to ``MAX_WAIT`` seconds; agents that retry
    with short client timeouts would pile them up. Falcon has taken the request's first
    ASGI event; the server's next event after the (empty) body is ``http.disconnect``.
    Falcon offers no public hook for it, hence its ``_receive``."""
    while (await req._receive())["type"] != "http.disconnect":
        pass  # a body nobody reads (a wait takes none)
    gone.set()


class WaitResource:
    """``wait_for_email``: answers at once when mail newer than the cursor exists, else
    parks (``Waiters.wait``) until the doorbell rings or ``timeout`` passes. The cursor
    is ``after``, or without it the agent's delivery cursor, which the wait advances
    over what it returns (docs/mail.md, "Delivery cursors"). The response always
    carries the ``cursor`` after what it returned."""

    RATE_CLASSES = {"GET": "wait"}  # docs/limits.md
    OPENAPI = {
        "get": operation(
            "Wait for mail this agent has not been given yet, or newer than a cursor (long poll)",
            {200: ("New messages (possibly none, on timeout) and the next cursor", ref("WaitResult"))},
            params=(
                INBOX,
                query_param(
                    "after",
                    {
                        "type": "string",
                        "description": "cursor from a previous call; without it, every message not yet "
                        "returned to this agent by a wait without after",
                    },
                ),
                query_param("timeout", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT}),
            ),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller, waiters, *, notice_disconnects: bool = False):
        self.caller = caller
        self.waiters = waiters
        # On for a real server. Falcon's test client signals http.disconnect as soon as
        # it has sent the request, which would end every wait at once.
        self.notice_disconnects = notice_disconnects
        # Delivery-cursor claims of waits woken together share one commit (one fsync on
        # SQLite, and no busy-handler sleeps between writers): a burst of wakes would
        # otherwise queue one commit each (bench/wait_latency.py --delivery-cursor).
        self.claims = GroupCommitter()
        caller.runner.on_shutdown(self.claims.shutdown)
        # The reads of inboxes woken by one ring share one pool job (core/readbatch.py).
        self.reads = ReadBatcher(caller.runner, reading.inbound_after_each)

    async def on_get(self, req, resp, inbox_id):
        timeout = _timeout(req.get_param("timeout"))
        inbox_id, cursor, claimant = await self.caller.as_agent(
            req, reading.open_wait, inbox_id, req.get_param("after"), scope="mailbox:read", action="message.wait"
        )
        claim = None
        if claimant is not None:  # no after: hand mail over on the agent's delivery cursor
            claim = lambda old, new: self.claims.run(cursors.claim, claimant, inbox_id, old, new)  # noqa: E731
        gone = Departure() if self.notice_disconnects else None
        watch = asyncio.ensure_future(_client_leaves(req, gone)) if gone is not None else None
        try:
            body, cursor = await self.waiters.wait(
                inbox_id, cursor, timeout, lambda c: self._read(inbox_id, c), claim=claim, gone=gone
            )
        finally:
            if watch is not None:
                watch.cancel()
        if body is None:
            body = orjson.dumps({"messages": [], "cursor": str(cursor), "timed_out": True})
        resp.content_type = falcon.MEDIA_JSON
        resp.data = body

    async def _read(self, inbox_id: str, cursor: int) -> tuple[bytes | None, int]:
        """Read the store and encode the answer once for every waiter sharing it."""
        views, cursor = await self.reads.run(inbox_id, cursor, WAIT_BATCH)
        if not views:
            return None, cursor
        body = {"messages": [message_json(v) for v in views], "cursor": str(cursor), "timed_out": False}
        return orjson.dumps(body), cursor


class CodeWaitResource:
    """``wait_for_code``: the code or verification link of the oldest inbound message no
    ``wait_for_code`` has handed this agent yet (optionally only from ``from_domain``),
    parking on the inbox's doorbell like ``wait_for_email`` until one arrives. Moves no
    delivery cursor (docs/mail.md, "Waiting for a code")."""

    RATE_CLASSES = {"GET": "wait"}  # docs/limits.md
    OPENAPI = {
        "get": operation(
            "Wait for a verification code or link this agent has not been given yet (long poll)",
            {
                200: ("The code and link of one message, or timed_out", ref("CodeResult")),
                403: ("Missing scope mailbox:read, or not an agent key", ref("Error")),
                404: ("No such inbox", ref("Error")),
                422: ("from_domain or timeout is invalid", ref("Error")),
            },
            params=(
                INBOX,
                query_param(
                    "from_domain",
                    {"type": "string", "description": "only mail whose sender's domain is this one or a subdomain"},
                ),
                query_param("timeout", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT}),
            ),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller, waiters, *, notice_disconnects: bool = False):
        self.caller = caller
        self.waiters = waiters
        self.notice_disconnects = notice_disconnects  # as WaitResource

    async def on_get(self, req, resp, inbox_id):
        timeout = _timeout(req.get_param("timeout"))
        from_domain = codewait.parse_domain(req.get_param("from_domain"))

        def open_wait(principal, info, inbox_id):  # the id only, as WaitResource's open_wait
            return codewait.open_code_wait(principal, info, inbox_id).id, principal.agent_id

        inbox_id, agent_id = await self.caller.as_agent(
            req, open_wait, inbox_id, scope="mailbox:read", action="code.wait"
        )
        gone = Departure() if self.notice_disconnects else None
        watch = asyncio.ensure_future(_client_leaves(req, gone)) if gone is not None else None

        async def read(cursor):
            if gone is not None and gone.is_set():
                return None, cursor  # nobody to hand a code to: claim nothing
            handed = await self.caller.runner.run(codewait.next_code, agent_id, inbox_id, from_domain)
            return (None if handed is None else handed.to_json()), cursor

        try:
            # Never shared between waiters: each read claims what it finds for its caller.
            found, _ = await self.waiters.wait(inbox_id, 0, timeout, read, gone=gone, shared=False)
        finally:
            if watch is not None:
                watch.cancel()
        empty = {"message_id": None, "inbox_id": inbox_id, "from": None, "code": None, "link": None}
        resp.media = {**(found or {**empty, "received_at": None}), "timed_out": found is None}


def _timeout(value: str | None) -> int:
    if value is None:
        return DEFAULT_WAIT
    if not value.isdigit() or int(value) > MAX_WAIT:
        raise InvalidInput(f"timeout must be an integer from 0 to {MAX_WAIT} seconds", field="timeout")
    return int(value)


class ThreadsResource:
    OPENAPI = {
        "get": operation(
            "List threads, most recently active first",
            {200: ("A page of threads", page_of(ref("Thread")))},
            params=(INBOX, *PAGING),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        page = await self.caller.as_agent(
            req,
            reading.list_threads,
            inbox_id,
            req.get_param("limit"),
            req.get_param("page_token"),
            scope="mailbox:read",
            action="thread.list",
        )
        resp.media = page_json(page, thread_json)


class ThreadResource:
    OPENAPI = {
        "get": operation(
            "Get a thread with its messages, oldest first",
            {200: ("The thread", ref("ThreadWithMessages")), 404: ("No such thread", ref("Error"))},
            params=(INBOX, path_param("thread_id")),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id, thread_id):
        thread, views = await self.caller.as_agent(
            req, reading.get_thread, inbox_id, thread_id, scope="mailbox:read", action="thread.read"
        )
        resp.media = {**thread_json(thread), "messages": [message_json(v) for v in views]}
