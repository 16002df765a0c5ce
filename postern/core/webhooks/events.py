"""Events become deliveries inside the transaction that commits them.

Ingest, outbound and inboxes call one function each from inside their own write
transaction. It finds the enabled webhooks of the inbox's enrollment that want the
event and writes one ``WebhookDelivery`` each, holding the exact body every attempt
will send; so an event is committed with its deliveries or not at all. Without a
matching webhook this costs one indexed query and builds no payload.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from postern.core import fastsql
from postern.core.ids import new_id
from postern.core.mail.messageview import view_of
from postern.core.models import EnrollmentKey, Inbox, Message, Webhook, WebhookDelivery, utcnow
from postern.core.views import inbox_json, message_json
from postern.core.webhooks import wake


def timestamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def body_of(event_type: str, data: dict, moment: dt.datetime | None = None) -> str:
    """The JSON body of one event: ``type``, ``timestamp`` and ``data``."""
    event = {"type": event_type, "timestamp": timestamp(moment or utcnow()), "data": data}
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def message_data(postern, message: Message) -> dict:
    """The message summary of the API, bodies up to ``webhooks.max_body_chars``, the
    attachments' metadata (never their bytes) and links to fetch the rest."""
    data = message_json(view_of(message), full=True, max_length=postern.config.webhooks.max_body_chars)
    data.pop("headers", None)  # unbounded; the full message has them
    # ``links`` here has long meant the URLs to fetch the rest; the verification links
    # found in the mail (the API's ``links``) travel as ``verification_links``.
    data["verification_links"] = data.pop("links", [])
    data["links"] = message_links(postern, message)
    return data


def message_links(postern, message: Message) -> dict:
    public_url = postern.config.webhooks.public_url or postern.config.server.public_url
    base = f"{public_url}/v1/inboxes/{message.inbox_id}"
    return {
        "message": f"{base}/messages/{message.id}",
        "thread": f"{base}/threads/{message.thread_id}",
        "raw_link": f"{base}/messages/{message.id}/raw-link",
    }


def inbox_data(inbox: Inbox) -> dict:
    return inbox_json(inbox)


def _wants(hook: dict, event_type: str, inbox_id: str) -> bool:
    inboxes = json.loads(hook["inbox_ids"])
    return event_type in json.loads(hook["event_types"]) and (not inboxes or inbox_id in inboxes)


def _hooks_of_inboxes(inbox_ids: list[str]) -> list[dict]:
    """The enabled webhooks of these inboxes' enrollments. Every stored message asks,
    so the statement is hand-written (fastsql): peewee took longer to build it than
    SQLite to answer it, on the SMTP listener's single committing thread."""
    marks = ", ".join("?" * len(inbox_ids))
    rows = fastsql.execute(
        'SELECT w."id", w."customer_id", w."event_types", w."inbox_ids", i."id" FROM "webhook" w '
        'JOIN "inbox" i ON i."enrollment_id" = w."enrollment_id" '
        f'WHERE i."id" IN ({marks}) AND w."enabled" = ?',
        (*inbox_ids, True),
    ).fetchall()
    keys = ("id", "customer", "event_types", "inbox_ids", "inbox")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def message_event(postern, event_type: str, messages: Iterable[Message], extra: dict | None = None) -> int:
    """Queue ``event_type`` for each message; call inside the event's transaction.
    ``extra`` joins the data of every one (``recipients`` of a bounce or complaint)."""
    messages = list(messages)
    if not messages:
        return 0
    hooks = _hooks_of_inboxes(list({m.inbox_id for m in messages}))
    by_inbox: dict[str, list[dict]] = {}
    for hook in hooks:
        if _wants(hook, event_type, hook["inbox"]):
            by_inbox.setdefault(hook["inbox"], []).append(hook)
    queued = 0
    for message in messages:
        wanting = by_inbox.get(message.inbox_id)
        if wanting:
            data = message_data(postern, message)
            queued += len(queue(wanting, event_type, {**data, **extra} if extra else data))
    if queued:
        wake.ring_in_transaction()
    return queued


def inbox_event(postern, event_type: str, inbox: Inbox) -> int:
    """Queue ``inbox.created``/``inbox.deleted``; call inside the event's transaction."""
    hooks = (
        Webhook.select(Webhook.id, Webhook.customer, Webhook.event_types, Webhook.inbox_ids)
        .where((Webhook.enrollment == inbox.enrollment_id) & (Webhook.enabled == True))  # noqa: E712
        .dicts()
    )
    wanting = [h for h in hooks if _wants(h, event_type, inbox.id)]
    queued = len(queue(wanting, event_type, inbox_data(inbox))) if wanting else 0
    if queued:
        wake.ring_in_transaction()
    return queued


def domain_event(postern, event_type: str, customer_id: str, domain: str, data: dict) -> int:
    """Queue ``domain.verified`` for the webhooks of every enrollment of the tenant that
    may see ``domain`` (its allowed domains, as ``GET /v1/domains`` shows them); call
    inside the event's transaction."""
    hooks = (
        Webhook.select(Webhook.id, Webhook.customer, Webhook.event_types, EnrollmentKey.allowed_domains)
        .join(EnrollmentKey, on=(EnrollmentKey.id == Webhook.enrollment))
        .where((Webhook.customer == customer_id) & (Webhook.enabled == True))  # noqa: E712
        .dicts()
    )
    wanting = [
        h for h in hooks if event_type in json.loads(h["event_types"]) and domain in json.loads(h["allowed_domains"])
    ]
    queued = len(queue(wanting, event_type, data)) if wanting else 0
    if queued:
        wake.ring_in_transaction()
    return queued


def queue(hooks: list[dict], event_type: str, data: dict) -> list[str]:
    """One delivery of one event per webhook (``{"id", "customer"}``); returns their ids."""
    now = utcnow()
    event_id, body = new_id("evt"), body_of(event_type, data, now)
    rows = [
        {
            "id": new_id("dlv"),
            "customer": hook["customer"],
            "webhook": hook["id"],
            "event_id": event_id,
            "event_type": event_type,
            "payload": body,
            "status": "pending",
            "next_attempt_at": now,
            "created_at": now,
        }
        for hook in hooks
    ]
    WebhookDelivery.insert_many(rows).execute()
    return [row["id"] for row in rows]
