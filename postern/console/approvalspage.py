"""The console's "Approvals" queue (docs/console.md): outbound mail held for human
approval, with approve and reject forms, and the switch that makes an enrollment key or
an inbox require approval (docs/mail.md, "Human approval").

Every action is the core call ``/v1/admin/approvals`` makes, as the session's admin
principal, with the session's CSRF token: an org admin sees and decides only its own
customer's mail; another tenant's message is the same 404 page as a missing one. The
mail is shown as text only (its HTML converted to text, then escaped by the template):
a reviewer's browser never renders what an agent wrote as HTML.
"""

from __future__ import annotations

import falcon

from postern.console.forms import read_form
from postern.console.web import page
from postern.core import approval
from postern.core.mail.htmltext import html_to_text
from postern.core.mail.messageview import view_of
from postern.core.views import pending_json

#: Characters of each message's text shown in the queue.
PREVIEW_CHARS = 4000


def _row(message) -> dict:
    row = pending_json(view_of(message))
    text = row["text"] if row["text"].strip() else html_to_text(row["html"])
    row["preview"] = text[:PREVIEW_CHARS]
    row["preview_cut"] = len(text) > PREVIEW_CHARS
    del row["html"]  # never handed to the template
    return row


class ApprovalsResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        def read(principal, info):
            return [_row(m) for m in approval.list_pending(principal, None, approval.MAX_LIST)]

        session, principal, pending = await self.web.act(req, read)
        flash = {"approved": "Approved: the message was handed on.", "rejected": "Rejected: it will not be sent."}
        self.web.render(
            resp,
            "approvals.html",
            session=session,
            principal=principal,
            pending=pending,
            flash=flash.get(req.get_param("done") or ""),
        )


class ApproveResource:
    """The same approval as ``POST /v1/admin/approvals/{id}/approve``."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, message_id):
        form = await read_form(req)
        postern = self.web.postern

        def approve(principal, info):
            # Handed to the outbox (it leaves within seconds): a delivery attempt here would
            # hold one of the console's database threads for as long as a relay hangs.
            return approval.approve(postern, principal, info, message_id, via_outbox=True)

        await self.web.act(req, approve, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/approvals?done=approved")


class RejectResource:
    """The same rejection as ``POST /v1/admin/approvals/{id}/reject``."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, message_id):
        form = await read_form(req)
        postern = self.web.postern

        def reject(principal, info):
            return approval.reject(postern, principal, info, message_id, form.get("note", ""))

        await self.web.act(req, reject, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/approvals?done=rejected")


class RequireResource:
    """Require approval of an enrollment key's or an inbox's mail, or stop requiring it."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp):
        form = await read_form(req)

        def require(principal, info):
            kind, object_id = form.get("kind", "").strip(), form.get("id", "").strip()
            return approval.set_required(principal, info, kind, object_id, form.get("require") == "on")

        await self.web.act(req, require, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/approvals")


def approval_routes(web) -> list[tuple[str, object]]:
    return [
        ("/console/approvals", ApprovalsResource(web)),
        ("/console/approvals/require", RequireResource(web)),
        ("/console/approvals/{message_id}/approve", ApproveResource(web)),
        ("/console/approvals/{message_id}/reject", RejectResource(web)),
    ]
