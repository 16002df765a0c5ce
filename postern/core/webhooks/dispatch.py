"""The dispatcher: claim due deliveries atomically, send them, record what happened.

Its own writes (claims, results) commit without an fsync on SQLite: a power cut may
lose the last of them, and the deliveries concerned are then sent again, which
at-least-once delivery allows. The events and their queued deliveries keep the
configured durability.

Several dispatchers (processes or hosts) may run at once. A claim takes due rows in
one write transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: under the
database write lock) and stamps each with a fresh lease token, the attempt count
and a lease expiry in ``next_attempt_at``. The result is recorded only under that
token, so an attempt is sent by one dispatcher only; a dispatcher that dies
mid-attempt leaves the row to be claimed again when its lease expires (that attempt
counts, and the receiver may see the event twice: delivery is at-least-once, and
``webhook-id`` lets it de-duplicate).
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import secrets
import socket
import ssl
import time
from dataclasses import dataclass

import postern
from postern.core import metrics
from postern.core.audit import relaxed_durability
from postern.core.db import is_postgres, write_transaction
from postern.core.errors import InvalidInput
from postern.core.models import Webhook, WebhookDelivery, utcnow
from postern.core.webhooks import destinations, signing

log = logging.getLogger("postern.webhooks")

#: Bytes of a receiver's response that are read (and up to 1 KiB kept in the log).
RESPONSE_CAP = 4096
KEPT_RESPONSE = 1024
USER_AGENT = f"Postern-Webhooks/{postern.__version__}"


@dataclass(frozen=True)
class Claimed:
    """One attempt a dispatcher owns: what to send, where, and signed with what."""

    delivery_id: str
    lease: str
    attempts: int
    event_id: str
    url: str
    payload: bytes
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    response: str | None = None


def lease_for(config) -> dt.timedelta:
    """How long an attempt owns its row: the send's timeouts plus a margin."""
    return dt.timedelta(seconds=2 * config.webhooks.timeout_seconds + 5)


def claim(postern, limit: int) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of enabled webhooks for this dispatcher."""
    now = utcnow()
    token = secrets.token_hex(8)
    with relaxed_durability(), write_transaction():
        enabled = Webhook.select(Webhook.id).where(Webhook.enabled == True)  # noqa: E712
        due = (
            WebhookDelivery.select(WebhookDelivery.id)
            .where(
                (WebhookDelivery.status == "pending")
                & (WebhookDelivery.next_attempt_at <= now)
                & WebhookDelivery.webhook.in_(enabled)
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if is_postgres():
            due = due.for_update(of=WebhookDelivery, skip_locked=True)
        ids = [row.id for row in due]
        if not ids:
            return []
        WebhookDelivery.update(
            lease=token,
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=now,
            next_attempt_at=now + lease_for(postern.config),
        ).where(WebhookDelivery.id.in_(ids)).execute()
        rows = list(
            WebhookDelivery.select(WebhookDelivery, Webhook)
            .join(Webhook)
            .where(WebhookDelivery.id.in_(ids))
            .order_by(WebhookDelivery.created_at)
        )
    return [_claimed(row, token, now) for row in rows]


def _claimed(row: WebhookDelivery, token: str, now: dt.datetime) -> Claimed:
    hook = row.webhook
    try:
        live = [signing.decrypt(hook.secret, hook.id)]
        if hook.previous_secret and hook.previous_secret_expires_at and hook.previous_secret_expires_at > now:
            live.append(signing.decrypt(hook.previous_secret, hook.id))
    except signing.SecretUnreadable as exc:
        log.error("webhook %s: %s; its deliveries fail until the secret is rotated", hook.id, exc)
        live = []  # send() refuses to send unsigned
    return Claimed(row.id, token, row.attempts, row.event_id, hook.url, row.payload.encode(), tuple(live))


def headers_for(attempt: Claimed, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": attempt.event_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signing.signature_header(list(attempt.secrets), attempt.event_id, ts, attempt.payload),
    }


def send(attempt: Claimed, timeout: float, allow: list[str]) -> Outcome:
    """POST once, to an address checked after the one resolution; no redirects."""
    if not attempt.secrets:
        return Outcome(False, error="the signing secret is unreadable; rotate it")
    try:
        target = destinations.parse(attempt.url)
        addresses = destinations.resolve(target, allow)
    except destinations.DestinationRefused as exc:
        return Outcome(False, error=f"destination refused: {exc}")
    except InvalidInput as exc:  # saved under rules that have since tightened
        return Outcome(False, error=f"bad destination: {exc}")
    headers = {**headers_for(attempt), "host": target.host_header}
    conn = _connection(target, addresses, timeout)
    try:
        conn.request("POST", target.path, body=attempt.payload, headers=headers)
        resp = conn.getresponse()
        snippet = resp.read(RESPONSE_CAP)[:KEPT_RESPONSE].decode("utf-8", errors="replace")
        ok = 200 <= resp.status < 300
        return Outcome(ok, resp.status, None if ok else f"HTTP {resp.status}", snippet)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        conn.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to pre-checked addresses only, whatever the URL's host says."""

    def __init__(self, target, addresses, timeout):
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = addresses

    def _open(self) -> socket.socket:
        error = None
        for address in self._addresses:
            try:
                return socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                error = exc
        raise error or OSError("no address to connect to")

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, target, addresses, timeout):
        super().__init__(target, addresses, timeout)
        self._tls = ssl.create_default_context()

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(self._open(), server_hostname=self.host)


def _connection(target, addresses, timeout):
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    return cls(target, addresses, timeout)


#: A recorded attempt's new status -> its ``postern_webhook_deliveries`` outcome.
WEBHOOK_OUTCOMES = {"succeeded": "succeeded", "pending": "retried", "failed": "failed"}


def record(postern, attempt: Claimed, outcome: Outcome) -> str | None:
    """Store one attempt's result under its lease; returns the delivery's new status,
    or None when the lease was lost (the row was retried or reclaimed meanwhile)."""
    return record_all(postern, [(attempt, outcome)])[0]


def record_all(postern, results: list[tuple[Claimed, Outcome]]) -> list[str | None]:
    """``record`` for several attempts in one transaction (one commit for a batch)."""
    with relaxed_durability(), write_transaction():
        statuses = [_record(postern.config.webhooks, attempt, outcome) for attempt, outcome in results]
    for (attempt, outcome), status in zip(results, statuses, strict=True):
        if status is not None:
            metrics.WEBHOOK_DELIVERIES.labels(WEBHOOK_OUTCOMES.get(status, status)).inc()
        if status is None:
            log.warning("delivery %s: lease lost before its result was recorded", attempt.delivery_id)
        else:
            result = outcome.status_code or outcome.error
            log.info(
                "delivery %s (%s) attempt %s: %s -> %s",
                attempt.delivery_id,
                attempt.event_id,
                attempt.attempts,
                result,
                status,
            )
    return statuses


def _record(config, attempt: Claimed, outcome: Outcome) -> str | None:
    now = utcnow()
    row = WebhookDelivery.get_or_none(
        (WebhookDelivery.id == attempt.delivery_id) & (WebhookDelivery.lease == attempt.lease)
    )
    if row is None:
        return None
    fields = {
        "lease": None,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "last_response": outcome.response,
    }
    if outcome.ok:
        status = "succeeded"
        fields.update(status=status, next_attempt_at=None, delivered_at=now)
        Webhook.update(failed_deliveries=0).where(
            (Webhook.id == row.webhook_id) & (Webhook.failed_deliveries != 0)
        ).execute()
    elif row.attempts <= len(config.retry_schedule):
        status = "pending"
        delay = config.retry_schedule[row.attempts - 1]
        fields.update(status=status, next_attempt_at=now + dt.timedelta(seconds=delay))
    else:
        status = "failed"
        fields.update(status=status, next_attempt_at=None)
        _count_failure(row.webhook_id, config.disable_after_failed_deliveries, outcome)
    WebhookDelivery.update(**fields).where(WebhookDelivery.id == row.id).execute()
    return status


def _count_failure(webhook_id: str, threshold: int, outcome: Outcome) -> None:
    Webhook.update(failed_deliveries=Webhook.failed_deliveries + 1).where(Webhook.id == webhook_id).execute()
    reason = (
        f"disabled after {threshold} deliveries in a row failed every attempt "
        f"(last: {outcome.error or outcome.status_code})"
    )[:500]
    disabled = (
        Webhook.update(enabled=False, disabled_reason=reason, updated_at=utcnow())
        .where((Webhook.id == webhook_id) & (Webhook.enabled == True) & (Webhook.failed_deliveries >= threshold))  # noqa: E712
        .execute()
    )
    if disabled:
        log.warning("webhook %s %s", webhook_id, reason)


def next_due(postern) -> dt.datetime | None:
    """When the earliest pending delivery of an enabled webhook falls due."""
    enabled = Webhook.select(Webhook.id).where(Webhook.enabled == True)  # noqa: E712
    row = (
        WebhookDelivery.select(WebhookDelivery.next_attempt_at)
        .where((WebhookDelivery.status == "pending") & WebhookDelivery.webhook.in_(enabled))
        .order_by(WebhookDelivery.next_attempt_at)
        .first()
    )
    return row.next_attempt_at if row else None


def deliver_due(postern, limit: int = 50) -> int:
    """Claim and send due deliveries one by one in this thread (tests, the CLI)."""
    config = postern.config.webhooks
    attempts = claim(postern, limit)
    for attempt in attempts:
        record(postern, attempt, send(attempt, config.timeout_seconds, config.allow_destinations))
    return len(attempts)
