"""Reading mail over HTTP: messages, threads, and ``wait_for_email``."""

from __future__ import annotations

import asyncio

from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.api.serialize import message_json, page_json, thread_json
from postern.core.auth import require_scope
from postern.core.doorbell import SAFETY_RECHECK
from postern.core.errors import InvalidInput
from postern.core.mail import reading

DEFAULT_WAIT = 30
MAX_WAIT = 300
WAIT_BATCH = 50


def _read_scope(fn, action):
    """Wrap a core read so the key's ``mailbox:read`` scope is checked first."""

    def call(principal, info, *args, **kwargs):
        require_scope(principal, "mailbox:read", info, action, args[0] if args else None)
        return fn(principal, info, *args, **kwargs)

    return call


INBOX = path_param("inbox_id")


class MessagesResource:
    OPENAPI = {
        "get": operation(
            "List messages, newest first",
            {200: ("A page of message summaries", page_of(ref("MessageSummary")))},
            params=(
                INBOX,
                *PAGING,
                query_param("thread_id"),
                query_param("direction", {"enum": ["inbound", "outbound"]}),
                query_param("received_after", {"type": "string", "format": "date-time"}),
            ),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id):
        filters = {k: req.get_param(k) for k in ("thread_id", "direction", "received_after")}
        page = await self.caller.as_agent(
            req,
            _read_scope(reading.list_messages, "message.list"),
            inbox_id,
            filters,
            req.get_param("limit"),
            req.get_param("page_token"),
        )
        resp.media = page_json(page, message_json)


class MessageResource:
    OPENAPI = {
        "get": operation(
            "Get a message: headers, text, html, attachment metadata",
            {200: ("The message", ref("Message")), 404: ("No such message in this inbox", ref("Error"))},
            params=(INBOX, path_param("message_id"), query_param("max_length", {"type": "integer", "minimum": 1})),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, inbox_id, message_id):
        max_length = req.get_param("max_length")
        if max_length is not None:
            if not max_length.isdigit() or not 1 <= int(max_length) <= 10**9:
                raise InvalidInput("max_length must be a positive integer", field="max_length")
            max_length = int(max_length)
        view = await self.caller.as_agent(req, _read_scope(reading.get_message, "message.read"), inbox_id, message_id)
        resp.media = message_json(view, full=True, max_length=max_length)


class WaitResource:
    """``wait_for_email``: answers at once when mail newer than ``after`` exists, else
    parks as a coroutine until the doorbell rings or ``timeout`` passes. The response
    always carries the ``cursor`` to pass as ``after`` next time, so nothing is missed
    between calls or across reconnects."""

    OPENAPI = {
        "get": operation(
            "Wait for mail newer than a cursor (long poll)",
            {200: ("New messages (possibly none, on timeout) and the next cursor", ref("WaitResult"))},
            params=(
                INBOX,
                query_param("after", {"type": "string", "description": "cursor from a previous call"}),
                query_param("timeout", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT}),
            ),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller, waiters):
        self.caller = caller
        self.waiters = waiters

    async def on_get(self, req, resp, inbox_id):
        timeout = req.get_param("timeout")
        if timeout is None:
            timeout = DEFAULT_WAIT
        elif not timeout.isdigit() or int(timeout) > MAX_WAIT:
            raise InvalidInput(f"timeout must be an integer from 0 to {MAX_WAIT} seconds", field="timeout")
        inbox, cursor = await self.caller.as_agent(
            req, _read_scope(reading.open_wait, "message.wait"), inbox_id, req.get_param("after")
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + int(timeout)
        self.waiters.ensure_listening()
        while True:
            # Subscribe before reading the store: a ring between the read and the
            # sleep still wakes us, so no message can slip through.
            event = self.waiters.subscribe(inbox.id)
            try:
                views = await self.caller.runner.run(reading.messages_after, inbox.id, cursor, WAIT_BATCH)
                remaining = deadline - loop.time()
                if views or remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, SAFETY_RECHECK))
                except TimeoutError:
                    pass  # re-read the store: covers a lost ring
            finally:
                self.waiters.unsubscribe(inbox.id, event)
        if views:
            cursor = views[-1].message.seq
        resp.media = {
            "messages": [message_json(v) for v in views],
            "cursor": str(cursor),
            "timed_out": not views,
        }


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
            _read_scope(reading.list_threads, "thread.list"),
            inbox_id,
            req.get_param("limit"),
            req.get_param("page_token"),
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
            req, _read_scope(reading.get_thread, "thread.read"), inbox_id, thread_id
        )
        resp.media = {**thread_json(thread), "messages": [message_json(v) for v in views]}
