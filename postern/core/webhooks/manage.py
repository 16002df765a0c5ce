"""Managing webhooks with an agent key (scope ``mailbox:read``).

A webhook belongs to the enrollment key whose agent created it and only ever
reports events of inboxes that enrollment's keys can read, so it pushes nothing
``mailbox:read`` could not fetch anyway: that is why that scope is the one that
manages webhooks. Every action is audited; the signing secret is returned only by
create and rotate.
"""

from __future__ import annotations

import datetime as dt
import json

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import InvalidInput, NotFound, PermissionDenied
from postern.core.ids import well_formed
from postern.core.inboxes import visible_inboxes
from postern.core.models import Inbox, Webhook, WebhookDelivery, utcnow
from postern.core.pagination import Page, paginate, parse_limit
from postern.core.principal import Principal, RequestInfo
from postern.core.webhooks import EVENT_TYPES, TEST_EVENT, destinations, events, signing, wake

FIELDS = {"url", "event_types", "inbox_ids", "description", "enabled"}
MAX_WEBHOOKS = 25  # per enrollment key
MAX_INBOX_FILTER = 100
DEFAULT_GRACE = 86400
MAX_GRACE = 7 * 86400
DELIVERY_STATUSES = ("pending", "succeeded", "failed")


def _visible(principal: Principal):
    query = Webhook.select()
    if principal.kind == "agent":
        return query.where(
            (Webhook.customer == principal.customer_id) & (Webhook.enrollment == principal.enrollment_id)
        )
    if not principal.is_operator:
        return query.where(Webhook.customer == principal.customer_id)
    return query


def _denied(principal, info, action, code, target=None):
    with write_transaction():
        audit.record(action, principal=principal, info=info, outcome="denied", code=code, target=target)


def _not_found(principal, info, action, webhook_id) -> NotFound:
    _denied(principal, info, action, "not_found", webhook_id)
    exc = NotFound(f"no webhook '{webhook_id[:60]}'")
    exc.audited = True
    return exc


def get_webhook(principal, info, webhook_id: str, *, action="webhook.read", audit_read=True) -> Webhook:
    hook = _visible(principal).where(Webhook.id == webhook_id).first() if well_formed(webhook_id, "whk") else None
    if hook is None:
        raise _not_found(principal, info, action, webhook_id)
    if audit_read:
        audit.record_read(action, principal=principal, info=info, target=hook.id)
    return hook


def _event_types(value) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"event_types must be a non-empty list of: {', '.join(EVENT_TYPES)}", field="event_types")
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"unknown event type '{unknown[0][:60]}'; choose from: {', '.join(EVENT_TYPES)}", field="event_types"
        )
    return list(dict.fromkeys(value))


def _inbox_ids(principal, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > MAX_INBOX_FILTER:
        raise InvalidInput(f"inbox_ids must be a list of up to {MAX_INBOX_FILTER} inbox ids", field="inbox_ids")
    wanted = list(dict.fromkeys(value))
    shaped = [v for v in wanted if well_formed(v, "inb")]
    found = {i.id for i in visible_inboxes(principal).where(Inbox.id.in_(shaped))} if shaped else set()
    missing = [v for v in wanted if v not in found]
    if missing:
        raise InvalidInput(f"inbox_ids: no inbox '{missing[0][:60]}'", field="inbox_ids")
    return wanted


def _text(value, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or any(c in value for c in "\r\n"):
        raise InvalidInput(f"{name} must be a string of up to {limit} characters, without line breaks", field=name)
    return value


def _fields(postern, principal, body: dict, *, creating: bool) -> dict:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    if creating:
        for required in ("url", "event_types"):
            if required not in body:
                raise InvalidInput(f"{required} is required", field=required)
    fields = {}
    if "url" in body:
        destinations.check_url(body["url"], postern.config.webhooks.allow_destinations)
        fields["url"] = body["url"]
    if "event_types" in body:
        fields["event_types"] = json.dumps(_event_types(body["event_types"]))
    if "inbox_ids" in body:
        fields["inbox_ids"] = json.dumps(_inbox_ids(principal, body["inbox_ids"]))
    if "description" in body:
        fields["description"] = _text(body["description"], "description", 200)
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise InvalidInput("enabled must be true or false", field="enabled")
        fields["enabled"] = body["enabled"]
    return fields


def create_webhook(postern, principal: Principal, info: RequestInfo, body: dict) -> tuple[Webhook, str]:
    """Create a webhook; returns it with its signing secret (shown this once)."""
    fields = _fields(postern, principal, body, creating=True)
    secret = signing.new_secret()
    with write_transaction():
        if _visible(principal).count() >= MAX_WEBHOOKS:
            raise PermissionDenied(
                f"an enrollment key may have at most {MAX_WEBHOOKS} webhooks", code="too_many_webhooks"
            )
        hook = Webhook(
            customer=principal.customer_id, enrollment=principal.enrollment_id, agent_id=principal.agent_id, **fields
        )
        hook.secret = signing.encrypt(secret, hook.id)
        hook.save(force_insert=True)
        audit.record("webhook.create", principal=principal, info=info, target=hook.id)
    return hook, secret


def list_webhooks(principal: Principal, info: RequestInfo, limit, page_token) -> Page:
    page = paginate(_visible(principal), Webhook.created_at, Webhook.id, parse_limit(limit), page_token)
    audit.record_read("webhook.list", principal=principal, info=info)
    return page


def update_webhook(postern, principal: Principal, info: RequestInfo, webhook_id: str, body: dict) -> Webhook:
    hook = get_webhook(principal, info, webhook_id, action="webhook.update", audit_read=False)
    fields = _fields(postern, principal, body, creating=False)
    if fields.get("enabled") is True:
        fields.update(disabled_reason=None, failed_deliveries=0)  # enabling again starts a fresh count
    elif fields.get("enabled") is False:
        fields["disabled_reason"] = "disabled by request"
    with write_transaction():
        Webhook.update(**fields, updated_at=utcnow()).where(Webhook.id == hook.id).execute()
        audit.record("webhook.update", principal=principal, info=info, target=hook.id)
        if fields.get("enabled") is True:
            wake.ring_in_transaction()  # its held deliveries are due again
    return Webhook.get_by_id(hook.id)


def delete_webhook(principal: Principal, info: RequestInfo, webhook_id: str) -> None:
    hook = get_webhook(principal, info, webhook_id, action="webhook.delete", audit_read=False)
    with write_transaction():
        if not Webhook.delete().where(Webhook.id == hook.id).execute():
            raise NotFound(f"no webhook '{webhook_id}'")  # a concurrent delete won
        audit.record("webhook.delete", principal=principal, info=info, target=hook.id)


def rotate_secret(principal: Principal, info: RequestInfo, webhook_id: str, body: dict) -> tuple[Webhook, str]:
    """A new secret; the current one keeps signing alongside it for ``grace_seconds``."""
    unknown = sorted(set(body) - {"grace_seconds"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    grace = body.get("grace_seconds", DEFAULT_GRACE)
    if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= MAX_GRACE:
        raise InvalidInput(f"grace_seconds must be an integer from 0 to {MAX_GRACE}", field="grace_seconds")
    hook = get_webhook(principal, info, webhook_id, action="webhook.rotate_secret", audit_read=False)
    secret = signing.new_secret()
    with write_transaction():
        Webhook.update(
            secret=signing.encrypt(secret, hook.id),
            previous_secret=hook.secret if grace else None,
            previous_secret_expires_at=utcnow() + dt.timedelta(seconds=grace) if grace else None,
            updated_at=utcnow(),
        ).where(Webhook.id == hook.id).execute()
        audit.record("webhook.rotate_secret", principal=principal, info=info, target=hook.id)
    return Webhook.get_by_id(hook.id), secret


def list_deliveries(principal, info, webhook_id: str, status, limit, page_token) -> Page:
    """Newest first; ``status`` filters."""
    hook = get_webhook(principal, info, webhook_id, action="webhook.delivery.list", audit_read=False)
    query = WebhookDelivery.select(*_log_fields()).where(WebhookDelivery.webhook == hook.id)
    if status:
        if status not in DELIVERY_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(DELIVERY_STATUSES)}", field="status")
        query = query.where(WebhookDelivery.status == status)
    page = paginate(query, WebhookDelivery.created_at, WebhookDelivery.id, parse_limit(limit), page_token)
    audit.record_read("webhook.delivery.list", principal=principal, info=info, target=hook.id)
    return page


def _log_fields():
    return [f for f in WebhookDelivery._meta.sorted_fields if f.name not in ("payload", "lease")]


def retry_delivery(postern, principal, info, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same ``webhook-id`` and body."""
    hook = get_webhook(principal, info, webhook_id, action="webhook.delivery.retry", audit_read=False)
    delivery = None
    if well_formed(delivery_id, "dlv"):
        delivery = WebhookDelivery.get_or_none(
            (WebhookDelivery.id == delivery_id) & (WebhookDelivery.webhook == hook.id)
        )
    if delivery is None:
        _denied(principal, info, "webhook.delivery.retry", "not_found", delivery_id)
        exc = NotFound(f"no delivery '{delivery_id[:60]}' for this webhook")
        exc.audited = True
        raise exc
    with write_transaction():
        WebhookDelivery.update(status="pending", next_attempt_at=utcnow(), lease=None).where(
            WebhookDelivery.id == delivery.id
        ).execute()
        audit.record("webhook.delivery.retry", principal=principal, info=info, target=delivery.id)
        wake.ring_in_transaction()
    return WebhookDelivery.get_by_id(delivery.id)


def send_test(postern, principal, info, webhook_id: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event for this webhook alone."""
    hook = get_webhook(principal, info, webhook_id, action="webhook.test", audit_read=False)
    with write_transaction():
        data = {"webhook_id": hook.id, "message": "a test event from Postern"}
        [delivery_id] = events.queue([{"id": hook.id, "customer": hook.customer_id}], TEST_EVENT, data)
        audit.record("webhook.test", principal=principal, info=info, target=delivery_id)
        wake.ring_in_transaction()
    return WebhookDelivery.get_by_id(delivery_id)
