"""Message retention (admin tokens only), per customer and per inbox, shaped like the
inbound policy's routes (api/quarantine.py): ``/v1/admin/retention`` is a customer's
(``customer_id`` for operator tokens), ``/v1/admin/inboxes/{inbox_id}/retention`` one
inbox's (docs/retention.md)."""

from __future__ import annotations

from postern.api.bodies import read_json
from postern.api.docs import operation, path_param, query_param, ref
from postern.core.mail import retention
from postern.core.views import retention_json

BODY = {
    "type": "object",
    "properties": {
        "days": {
            "type": ["integer", "null"],
            "minimum": retention.MIN_DAYS,
            "maximum": retention.MAX_DAYS,
            "description": "keep mail this many days after it was received; null keeps it forever",
        }
    },
    "required": ["days"],
    "additionalProperties": False,
}


class RetentionResource:
    def __init__(self, caller, *, per_inbox: bool):
        self.caller = caller
        params = (path_param("inbox_id"),) if per_inbox else (query_param("customer_id"),)
        level = "an inbox" if per_inbox else "a customer"
        after = "its customer's setting applies again" if per_inbox else "its mail is kept forever"
        self.OPENAPI = {
            "get": operation(
                f"The message retention of {level}: what it sets and what applies",
                {200: ("The retention", ref("Retention")), 404: ("Not found", ref("Error"))},
                params=params,
                auth="admin",
            ),
            "put": operation(
                f"Set the message retention of {level} (null: keep forever)",
                {
                    200: ("The retention now", ref("Retention")),
                    404: ("Not found", ref("Error")),
                    422: ("days is not an integer from 1 to 36500 or null", ref("Error")),
                },
                body=BODY,
                params=params,
                auth="admin",
            ),
            "delete": operation(
                f"Remove the retention setting of {level}: {after}",
                {200: ("The retention now", ref("Retention")), 404: ("Not found", ref("Error"))},
                params=params,
                auth="admin",
            ),
        }

    async def on_get(self, req, resp, inbox_id=None):
        customer_ref = req.get_param("customer_id")
        view = await self.caller.as_admin(req, retention.read_retention, customer_ref, inbox_id)
        resp.media = retention_json(view)

    async def on_put(self, req, resp, inbox_id=None):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=1024)
        customer_ref = req.get_param("customer_id")

        def put(principal, info):
            return retention.set_retention(principal, info, retention.parse_body(body), customer_ref, inbox_id)

        resp.media = retention_json(await self.caller.as_admin(req, put))

    async def on_delete(self, req, resp, inbox_id=None):
        customer_ref = req.get_param("customer_id")
        view = await self.caller.as_admin(req, retention.clear_retention, customer_ref, inbox_id)
        resp.media = retention_json(view)


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/retention", RetentionResource(caller, per_inbox=False)),
        ("/v1/admin/inboxes/{inbox_id}/retention", RetentionResource(caller, per_inbox=True)),
    ]
