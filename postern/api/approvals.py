"""Human approval of outbound mail (admin tokens; docs/mail.md, "Human approval"):
``/v1/admin/approvals`` lists the mail waiting for a reviewer, ``…/{message_id}/approve``
and ``…/reject`` decide it, and ``…/approval`` on an enrollment key or an inbox turns
the requirement on or off.

Approval takes no content: the message leaves exactly as the agent wrote it, so the
approve body must be empty and reject takes only a ``note``; any other field (an edited
``text``, say) is a 422.
"""

from __future__ import annotations

from postern.api.bodies import read_json, reject_unknown
from postern.api.docs import operation, path_param, query_param, ref
from postern.core import approval
from postern.core.mail.messageview import view_of
from postern.core.mail.outbound import first_attempt
from postern.core.views import enrollment_key_json, inbox_json, pending_json

NOT_FOUND = ("No such outbound message (another tenant's looks the same)", ref("Error"))
NOT_PENDING = ("The message is not pending approval (approved, rejected or expired already)", ref("Error"))
APPROVE_BODY = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
    "description": "empty: the message is sent as the agent wrote it; no field may change it",
}
REJECT_BODY = {
    "type": "object",
    "properties": {"note": {"type": "string", "maxLength": approval.MAX_NOTE, "description": "shown to the agent"}},
    "additionalProperties": False,
}
REQUIRE_BODY = {
    "type": "object",
    "properties": {"require_approval": {"type": "boolean"}},
    "required": ["require_approval"],
    "additionalProperties": False,
}


async def _body(req, allowed: set[str]) -> dict:
    """The JSON body, or {} when there is none; a field outside ``allowed`` is a 422."""
    empty = req.content_type is None and not req.content_length
    body = {} if empty else await read_json(req, max_bytes=approval.MAX_NOTE * 6 + 1024)
    reject_unknown(body, allowed)
    return body


class ApprovalsResource:
    OPENAPI = {
        "get": operation(
            "Outbound mail waiting for approval, oldest first (an org admin sees its own customer's)",
            {200: ("The pending messages", ref("PendingMessageList")), 404: ("No such customer", ref("Error"))},
            params=(
                query_param("customer_id", {"type": "string", "description": "an operator's filter: id or label"}),
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": approval.MAX_LIST}),
            ),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        customer, limit = req.get_param("customer_id"), req.get_param("limit")

        def listing(principal, info):
            return [view_of(m) for m in approval.list_pending(principal, customer, limit)]

        resp.media = {"data": [pending_json(v) for v in await self.caller.as_admin(req, listing)]}


class ApproveResource:
    OPENAPI = {
        "post": operation(
            "Approve a pending message as the agent wrote it: it is queued and its first delivery attempt made",
            {200: ("The message, after its first attempt", ref("PendingMessage")), 404: NOT_FOUND, 409: NOT_PENDING},
            body=APPROVE_BODY,
            params=(path_param("message_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, message_id):
        await self.caller.check(req, "admin")
        await _body(req, set())
        postern = self.caller.postern
        message = await self.caller.as_admin(
            req, lambda p, i: approval.approve(postern, p, i, message_id, attempt_now=False)
        )
        # As for a send (api/messages.py): the attempt waits on the send backend, on a pool of its own.
        view = await self.caller.deliveries.run(lambda: view_of(first_attempt(postern, message)))
        resp.media = pending_json(view)


class RejectResource:
    OPENAPI = {
        "post": operation(
            "Reject a pending message: never sent; the agent reads the note in review_note",
            {200: ("The rejected message", ref("PendingMessage")), 404: NOT_FOUND, 409: NOT_PENDING},
            body=REJECT_BODY,
            params=(path_param("message_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, message_id):
        await self.caller.check(req, "admin")
        body = await _body(req, {"note"})
        postern = self.caller.postern

        def reject(principal, info):
            return view_of(approval.reject(postern, principal, info, message_id, body.get("note")))

        resp.media = pending_json(await self.caller.as_admin(req, reject))


class RequireResource:
    """``POST …/approval`` on an enrollment key or an inbox."""

    def __init__(self, caller, kind: str):
        self.caller = caller
        self.kind = kind
        noun, schema, param = {
            "enrollment": ("an enrollment key (every inbox made under it)", "EnrollmentKey", "key_id"),
            "inbox": ("one inbox", "Inbox", "inbox_id"),
        }[kind]
        self.OPENAPI = {
            "post": operation(
                f"Require human approval of the outbound mail of {noun}, or stop requiring it",
                {200: ("Updated", ref(schema)), 404: ("Not found", ref("Error"))},
                body=REQUIRE_BODY,
                params=(path_param(param),),
                auth="admin",
            )
        }

    async def on_post(self, req, resp, **params):
        await self.caller.check(req, "admin")
        body = await _body(req, {"require_approval"})
        [object_id] = params.values()
        row = await self.caller.as_admin(req, approval.set_required, self.kind, object_id, body.get("require_approval"))
        resp.media = enrollment_key_json(row) if self.kind == "enrollment" else inbox_json(row)


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/approvals", ApprovalsResource(caller)),
        ("/v1/admin/approvals/{message_id}/approve", ApproveResource(caller)),
        ("/v1/admin/approvals/{message_id}/reject", RejectResource(caller)),
        ("/v1/admin/enrollment-keys/{key_id}/approval", RequireResource(caller, "enrollment")),
        ("/v1/admin/inboxes/{inbox_id}/approval", RequireResource(caller, "inbox")),
    ]
