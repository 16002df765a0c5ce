"""Console pages for mail: inboxes, their messages (live), one message, its HTML in a
sandboxed frame, downloads."""

from __future__ import annotations

import falcon

from postern.api.calls import request_info
from postern.console.forms import read_form
from postern.console.manage import PAGE_SIZE, audited_page
from postern.console.web import page, security_headers
from postern.core import audit
from postern.core.errors import InvalidInput
from postern.core.inboxes import delete_inbox, get_inbox, search_inboxes
from postern.core.mail import links
from postern.core.mail.reading import get_message, inbound_after, list_messages
from postern.core.mail.sanitize import frame_document, resolve_cid_images, sanitize_html
from postern.core.models import Attachment, Inbox
from postern.core.views import inbox_json, message_json

#: How long one live request waits for mail before the page asks again.
LIVE_SECONDS = 25.0


class InboxesResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        q, agent_id = (req.get_param("q") or "").strip(), req.get_param("agent_id")
        token = req.get_param("page_token")

        def listing(principal, info):
            query = search_inboxes(principal, {"q": q, "agent_id": agent_id})
            return audited_page(query, Inbox, token, "inbox.list", principal, info)

        session, principal, found = await self.web.act(req, listing)
        self.web.render(
            resp,
            "inboxes.html",
            session=session,
            principal=principal,
            inboxes=[inbox_json(i) for i in found.items],
            next_page_token=found.next_page_token,
            q=q,
        )


class InboxResource:
    """An inbox's messages, newest first; ``thread_id`` narrows it to one thread."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, inbox_id):
        filters = {"thread_id": req.get_param("thread_id")}
        token = req.get_param("page_token")

        def read(principal, info):
            inbox = get_inbox(principal, info, inbox_id, audit_read=False)
            found = list_messages(principal, info, inbox_id, filters, PAGE_SIZE, token)
            return inbox, found

        session, principal, (inbox, found) = await self.web.act(req, read)
        self.web.render(
            resp,
            "inbox.html",
            session=session,
            principal=principal,
            inbox=inbox_json(inbox),
            messages=[message_json(v) for v in found.items],
            next_page_token=found.next_page_token,
            thread_id=filters["thread_id"],
            # Only the first page of the whole inbox grows live.
            live_after=inbox.last_seq if not token and not filters["thread_id"] else None,
        )


class LiveResource:
    """Long-polled by the inbox page: answers when new mail arrives (or after
    ``LIVE_SECONDS`` with nothing) with the new rows and the next poll. Woken by the
    same doorbell as ``wait_for_email``; it reads, it never moves an agent's cursor."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, inbox_id):
        try:
            after = int(req.get_param("after") or "0")
        except ValueError:
            raise InvalidInput("after must be a message cursor", field="after") from None

        def opened(principal, info):
            return get_inbox(principal, info, inbox_id, audit_read=False)

        session, principal, inbox = await self.web.act(req, opened)
        runner = self.web.runner

        async def read(cursor):
            views, moved = await runner.run(inbound_after, inbox.id, cursor, PAGE_SIZE)
            return ([message_json(v) for v in views] or None), moved

        found, cursor = await self.web.waiters.wait(inbox.id, after, LIVE_SECONDS, read)
        if found:
            await runner.run(_audit_live, principal, req, inbox.id)
        self.web.render(
            resp,
            "live.html",
            session=session,
            principal=principal,
            inbox=inbox_json(inbox),
            messages=list(reversed(found or [])),
            live_after=cursor,
        )


def _audit_live(principal, req, inbox_id):
    audit.record_read("message.list", principal=principal, info=request_info(req), target=inbox_id)


class InboxDeleteResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, inbox_id):
        form = await read_form(req)
        postern = self.web.postern

        def delete(principal, info):
            delete_inbox(postern, principal, info, inbox_id)

        await self.web.act(req, delete, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/inboxes")


class MessageResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, inbox_id, message_id):
        def read(principal, info):
            inbox = get_inbox(principal, info, inbox_id, audit_read=False)
            return inbox, get_message(principal, info, inbox_id, message_id)

        session, principal, (inbox, view) = await self.web.act(req, read)
        message = message_json(view, full=True)
        self.web.render(
            resp,
            "message.html",
            session=session,
            principal=principal,
            inbox=inbox_json(inbox),
            message=message,
            remote_images=req.get_param("images") == "1",
        )


class MessageFrameResource:
    """The sanitised HTML of a message, as its own document for a sandboxed iframe.
    Three layers: the sanitiser removes script, handlers, forms and styles; this
    response's CSP (with ``sandbox``) forbids scripts and every fetch but images the
    human asked for; the iframe's ``sandbox`` attribute gives it a unique origin."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp, inbox_id, message_id):
        remote = req.get_param("images") == "1"

        def read(principal, info):
            message = get_message(principal, info, inbox_id, message_id).message
            parts = Attachment.select(Attachment.content_id, Attachment.content_type, Attachment.data).where(
                (Attachment.message == message.id) & Attachment.content_id.is_null(False)
            )
            return message.html, {a.content_id: (a.content_type, bytes(a.data)) for a in parts}

        _, _, (html, images) = await self.web.act(req, read)
        clean = resolve_cid_images(sanitize_html(html or "", remote_images=remote), images)
        document, csp = frame_document(clean, remote_images=remote)
        security_headers(resp, csp=csp, frame="SAMEORIGIN")
        resp.content_type = falcon.MEDIA_HTML
        resp.text = document


class DownloadResource:
    """A single-use download link, minted by the same core call as the API's
    ``raw-link`` and attachment ``link``; the browser is sent to it at once."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, inbox_id, message_id):
        form = await read_form(req)
        attachment_id = form.get("attachment_id") or None
        ttl = self.web.postern.config.auth.download_link_ttl_seconds
        _, _, link = await self.web.act(
            req, links.issue, inbox_id, message_id, attachment_id, ttl, csrf=form.get("csrf"), state_changing=True
        )
        raise falcon.HTTPSeeOther(f"/v1/downloads/{link.token}")
