"""The suppression list (admin tokens; docs/deliverability.md, "Suppression list"):
``/v1/admin/suppressions`` lists and adds entries, ``DELETE
/v1/admin/suppressions/{suppression_id}`` removes one. And RFC 8058 one-click
unsubscribe: ``POST /v1/unsubscribe/{token}``, with no key (the token is the
credential); ``GET`` on the same URL only shows a page with a button that POSTs, since
link scanners and mail previewers fetch every URL in a message."""

from __future__ import annotations

import html

import falcon

from postern.api.bodies import read_json, reject_unknown
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.core import audit, suppression
from postern.core.errors import NotFound
from postern.core.mail import unsubscribe
from postern.core.views import page_json

SUPPRESSION = {
    "type": "object",
    "required": ["id", "customer_id", "address", "reason", "detail", "message_id", "created_at", "created_by"],
    "properties": {
        "id": {"type": "string"},
        "customer_id": {"type": "string"},
        "address": {"type": "string", "description": "lower-cased"},
        "reason": {"enum": list(suppression.REASONS)},
        "detail": {"type": "string", "description": "e.g. the bounce's '550 5.1.1 user unknown'"},
        "message_id": {"type": ["string", "null"], "description": "the message that caused it, when one did"},
        "created_at": {"type": "string", "format": "date-time"},
        "created_by": {"type": "string", "description": "the admin token's id, 'cli', 'unsubscribe' or 'system'"},
    },
}
BODY = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "description": "the customer's id or label (an org admin's own if left out)"},
        "address": {"type": "string", "maxLength": suppression.MAX_ADDRESS},
        "detail": {"type": "string", "maxLength": suppression.MAX_DETAIL, "description": "why, for other admins"},
    },
    "required": ["address"],
    "additionalProperties": False,
}
#: Nothing of these pages may load, run or be framed; the token in the URL must not
#: leave in a Referer header.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
#: RFC 8058's body is one short field; a mail provider sends nothing bigger.
MAX_FORM_BODY = 4096
UNKNOWN_LINK = "no such unsubscribe link"


def unsubscribe_url(postern, token: str) -> str:
    """The one-click link for ``token`` (postern.core.mail.unsubscribe)."""
    return unsubscribe.url(postern, token)


class SuppressionsResource:
    OPENAPI = {
        "get": operation(
            "The suppression list, oldest first (an org admin sees its own customer's)",
            {200: ("A page of entries", page_of(SUPPRESSION)), 404: ("No such customer", ref("Error"))},
            params=(
                *PAGING,
                query_param("customer"),
                query_param("reason", {"enum": list(suppression.REASONS)}),
                query_param("address"),
            ),
            auth="admin",
        ),
        "post": operation(
            "Suppress an address for a customer: its mail to the address is dropped from now on",
            {
                201: ("The entry", SUPPRESSION),
                404: ("No such customer", ref("Error")),
                409: ("The address is already suppressed", ref("Error")),
                422: ("Not an email address, or a field wrong", ref("Error")),
            },
            body=BODY,
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        customer, reason, address = req.get_param("customer"), req.get_param("reason"), req.get_param("address")
        limit, token = req.get_param("limit"), req.get_param("page_token")

        def listing(principal, info):
            page = suppression.list_suppressions(principal, customer, reason, limit, token, address=address)
            audit.record_read("suppression.list", principal=principal, info=info, target=customer)
            return page

        resp.media = page_json(await self.caller.as_admin(req, listing), suppression.suppression_json)

    async def on_post(self, req, resp):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=2048)
        reject_unknown(body, set(BODY["properties"]))

        def add(principal, info):
            return suppression.add_suppression(
                principal, info, body.get("customer"), body.get("address"), body.get("detail") or ""
            )

        resp.status = falcon.HTTP_201
        resp.media = suppression.suppression_json(await self.caller.as_admin(req, add))


class SuppressionResource:
    OPENAPI = {
        "delete": operation(
            "Remove an entry: the customer may mail the address again",
            {204: ("Removed", None), 404: ("No such entry", ref("Error"))},
            params=(path_param("suppression_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_delete(self, req, resp, suppression_id):
        await self.caller.as_admin(req, suppression.remove_suppression, suppression_id)
        resp.status = falcon.HTTP_204


def _text_response(description: str, media_type: str) -> dict:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _unsubscribe_openapi() -> dict:
    post = operation(
        "One-click unsubscribe (RFC 8058): the link's address gets no more mail from its sender",
        {404: ("Not a valid link", ref("Error"))},
        params=(path_param("token"),),
        auth=None,
    )
    post["responses"] = {"200": _text_response("Unsubscribed (or was already)", "text/plain"), **post["responses"]}
    post["requestBody"] = {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"List-Unsubscribe": {"enum": ["One-Click"]}}}
            }
        },
    }
    get = operation(
        "A page with a button that unsubscribes; fetching it changes nothing",
        {404: ("Not a valid link", ref("Error"))},
        params=(path_param("token"),),
        auth=None,
    )
    get["responses"] = {"200": _text_response("The page", "text/html"), **get["responses"]}
    return {"post": post, "get": get}


class UnsubscribeResource:
    """The link's token is the credential; it names one address of one customer."""

    OPENAPI = _unsubscribe_openapi()

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, token):
        def look(info, token):
            link = suppression.token_address(token)
            if link is None:
                raise NotFound(UNKNOWN_LINK)
            return link.address

        address = await self.caller.anonymous(req, look, token)
        _page_headers(resp)
        resp.content_type = "text/html; charset=utf-8"
        resp.text = PAGE.format(address=html.escape(address))

    async def on_post(self, req, resp, token):
        # The body (List-Unsubscribe=One-Click) says nothing the URL does not: it is read
        # only so the connection is left clean, and never required.
        await req.stream.read(MAX_FORM_BODY)

        def unsubscribe(info, token):
            row = suppression.unsubscribe(token, info)
            if row is None:
                raise NotFound(UNKNOWN_LINK)
            return row.address

        address = await self.caller.anonymous(req, unsubscribe, token)
        _page_headers(resp)
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = f"Unsubscribed: {address} will get no more mail from this sender.\n"


def _page_headers(resp) -> None:
    for name, value in PAGE_HEADERS.items():
        resp.set_header(name, value)


# No action attribute: the form posts back to this very URL, whatever prefix a proxy adds.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Unsubscribe</title></head>
<body><h1>Unsubscribe</h1>
<p>Stop mail from this sender to <strong>{address}</strong>?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>
</body></html>
"""


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/suppressions", SuppressionsResource(caller)),
        ("/v1/admin/suppressions/{suppression_id}", SuppressionResource(caller)),
        ("/v1/unsubscribe/{token}", UnsubscribeResource(caller)),
    ]
