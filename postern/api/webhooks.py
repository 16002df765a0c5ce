"""``/v1/webhooks``: manage webhooks, read their delivery log, retry and test.

Agent keys with ``mailbox:read`` manage the webhooks of their own enrollment
(postern.core.webhooks.manage says why that scope).
"""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json
from postern.api.docs import PAGING, operation, page_of, path_param, query_param, ref
from postern.api.schemas import INT_NULL, S_NULL, SCHEMAS, STRS, S, obj
from postern.core.views import delivery_json, page_json, webhook_json
from postern.core.webhooks import EVENT_TYPES, manage

SCOPE = "mailbox:read"
HOOK = path_param("webhook_id")
BOOL = {"type": "boolean"}

WEBHOOK_FIELDS = {
    "id": S,
    "url": S,
    "event_types": STRS,
    "inbox_ids": STRS,
    "description": S,
    "enabled": BOOL,
    "disabled_reason": S_NULL,
    "secret_rotating_until": S_NULL,
    "created_at": S,
    "updated_at": S,
}
DELIVERY_FIELDS = {
    "id": S,
    "webhook_id": S,
    "event_id": S,
    "event_type": S,
    "status": {"type": "string", "enum": list(manage.DELIVERY_STATUSES)},
    "attempts": {"type": "integer"},
    "next_attempt_at": S_NULL,
    "last_attempt_at": S_NULL,
    "last_status_code": INT_NULL,
    "last_error": S_NULL,
    "last_response": S_NULL,
    "created_at": S,
    "delivered_at": S_NULL,
}
SCHEMAS.update(
    {
        "Webhook": obj(WEBHOOK_FIELDS),
        "WebhookWithSecret": obj({**WEBHOOK_FIELDS, "secret": {**S, "description": "whsec_…; shown only here"}}),
        "WebhookDelivery": obj(DELIVERY_FIELDS),
    }
)
WRITE_PROPERTIES = {
    "url": {"type": "string", "maxLength": 2000, "description": "http(s); non-public addresses are refused"},
    "event_types": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}, "minItems": 1},
    "inbox_ids": {"type": "array", "items": S, "description": "only these inboxes; empty or absent: all"},
    "description": {"type": "string", "maxLength": 200},
    "enabled": BOOL,
}
CREATE_REQUEST = {
    "type": "object",
    "required": ["url", "event_types"],
    "properties": WRITE_PROPERTIES,
    "additionalProperties": False,
}
UPDATE_REQUEST = {"type": "object", "properties": WRITE_PROPERTIES, "additionalProperties": False}
ROTATE_REQUEST = {
    "type": "object",
    "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": manage.MAX_GRACE}},
    "additionalProperties": False,
}
NOT_FOUND = ("No such webhook for this key", ref("Error"))


class WebhooksResource:
    OPENAPI = {
        "post": operation(
            "Create a webhook; the signing secret is in this response only",
            {201: ("Created", ref("WebhookWithSecret")), 422: ("A field is invalid", ref("Error"))},
            body=CREATE_REQUEST,
            scope=SCOPE,
        ),
        "get": operation(
            "List this enrollment's webhooks",
            {200: ("A page of webhooks", page_of(ref("Webhook")))},
            params=PAGING,
            scope=SCOPE,
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp):
        await self.caller.check(req, "agent", SCOPE, "webhook.create")
        body = await read_json(req, max_bytes=16384)
        postern = self.caller.postern
        hook, secret = await self.caller.as_agent(
            req, lambda p, i: manage.create_webhook(postern, p, i, body), scope=SCOPE, action="webhook.create"
        )
        resp.status = falcon.HTTP_201
        resp.media = webhook_json(hook, secret)

    async def on_get(self, req, resp):
        limit, token = req.get_param("limit"), req.get_param("page_token")
        page = await self.caller.as_agent(req, manage.list_webhooks, limit, token, scope=SCOPE, action="webhook.list")
        resp.media = page_json(page, webhook_json)


class WebhookResource:
    OPENAPI = {
        "get": operation(
            "Get a webhook", {200: ("The webhook", ref("Webhook")), 404: NOT_FOUND}, params=(HOOK,), scope=SCOPE
        ),
        "patch": operation(
            "Change a webhook's url, event types, inbox filter, description or enabled; "
            "enabling again clears disabled_reason and the failure count",
            {200: ("The webhook", ref("Webhook")), 404: NOT_FOUND, 422: ("A field is invalid", ref("Error"))},
            body=UPDATE_REQUEST,
            params=(HOOK,),
            scope=SCOPE,
        ),
        "delete": operation(
            "Delete a webhook and its delivery log",
            {204: ("Deleted", None), 404: NOT_FOUND},
            params=(HOOK,),
            scope=SCOPE,
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, webhook_id):
        hook = await self.caller.as_agent(req, manage.get_webhook, webhook_id, scope=SCOPE, action="webhook.read")
        resp.media = webhook_json(hook)

    async def on_patch(self, req, resp, webhook_id):
        await self.caller.check(req, "agent", SCOPE, "webhook.update")
        body = await read_json(req, max_bytes=16384)
        postern = self.caller.postern
        hook = await self.caller.as_agent(
            req,
            lambda p, i: manage.update_webhook(postern, p, i, webhook_id, body),
            scope=SCOPE,
            action="webhook.update",
        )
        resp.media = webhook_json(hook)

    async def on_delete(self, req, resp, webhook_id):
        await self.caller.as_agent(req, manage.delete_webhook, webhook_id, scope=SCOPE, action="webhook.delete")
        resp.status = falcon.HTTP_204


class RotateSecretResource:
    OPENAPI = {
        "post": operation(
            "Rotate the signing secret: the new one is in this response only; the old one keeps "
            "signing alongside it for grace_seconds (default 86400)",
            {200: ("The webhook with its new secret", ref("WebhookWithSecret")), 404: NOT_FOUND},
            body=ROTATE_REQUEST,
            params=(HOOK,),
            scope=SCOPE,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, webhook_id):
        await self.caller.check(req, "agent", SCOPE, "webhook.rotate_secret")
        body = await read_json(req, max_bytes=1024) if req.content_length else {}
        hook, secret = await self.caller.as_agent(
            req, manage.rotate_secret, webhook_id, body, scope=SCOPE, action="webhook.rotate_secret"
        )
        resp.media = webhook_json(hook, secret)


class DeliveriesResource:
    OPENAPI = {
        "get": operation(
            "The delivery log, oldest first: status, attempts, last status code, next attempt",
            {200: ("A page of deliveries", page_of(ref("WebhookDelivery"))), 404: NOT_FOUND},
            params=(HOOK, *PAGING, query_param("status", {"type": "string", "enum": list(manage.DELIVERY_STATUSES)})),
            scope=SCOPE,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, webhook_id):
        status, limit, token = req.get_param("status"), req.get_param("limit"), req.get_param("page_token")
        page = await self.caller.as_agent(
            req, manage.list_deliveries, webhook_id, status, limit, token, scope=SCOPE, action="webhook.delivery.list"
        )
        resp.media = page_json(page, delivery_json)


class RetryResource:
    OPENAPI = {
        "post": operation(
            "Send a delivery again now, with the same webhook-id and body",
            {202: ("Queued", ref("WebhookDelivery")), 404: ("No such webhook or delivery for this key", ref("Error"))},
            params=(HOOK, path_param("delivery_id")),
            scope=SCOPE,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, webhook_id, delivery_id):
        postern = self.caller.postern
        delivery = await self.caller.as_agent(
            req,
            lambda p, i: manage.retry_delivery(postern, p, i, webhook_id, delivery_id),
            scope=SCOPE,
            action="webhook.delivery.retry",
        )
        resp.status = falcon.HTTP_202
        resp.media = delivery_json(delivery)


class WebhookTestResource:
    OPENAPI = {
        "post": operation(
            "Queue a webhook.test event for this webhook",
            {202: ("Queued", ref("WebhookDelivery")), 404: NOT_FOUND},
            params=(HOOK,),
            scope=SCOPE,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, webhook_id):
        postern = self.caller.postern
        delivery = await self.caller.as_agent(
            req, lambda p, i: manage.send_test(postern, p, i, webhook_id), scope=SCOPE, action="webhook.test"
        )
        resp.status = falcon.HTTP_202
        resp.media = delivery_json(delivery)


def routes(caller) -> list[tuple[str, object]]:
    hook = "/v1/webhooks/{webhook_id}"
    return [
        ("/v1/webhooks", WebhooksResource(caller)),
        (hook, WebhookResource(caller)),
        (f"{hook}/rotate-secret", RotateSecretResource(caller)),
        (f"{hook}/deliveries", DeliveriesResource(caller)),
        (f"{hook}/deliveries/{{delivery_id}}/retry", RetryResource(caller)),
        (f"{hook}/test", WebhookTestResource(caller)),
    ]
