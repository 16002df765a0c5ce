"""Handing an outbound message to the send backend: the MIME signed, the fields a
field-based backend needs, the VERP envelope sender; bulk mail as one copy per
recipient with its own unsubscribe link. Used by ``delivery.deliver``."""

from __future__ import annotations

import json
import logging

from postern.core import dkim
from postern.core.backends import (
    BackendError,
    OutboundAttachment,
    OutboundMessage,
    PermanentFailure,
    RecipientOutcome,
    SendResult,
    TemporaryFailure,
)
from postern.core.db import write_transaction
from postern.core.errors import BackendUnavailable
from postern.core.mail import claims, recipients, reports, unsubscribe, verptag
from postern.core.models import Message

log = logging.getLogger("postern.outbound")


def hand_over(postern, message: Message, remote: list[str]):
    try:
        backend = postern.backend("send")
    except BackendUnavailable as exc:
        raise PermanentFailure(str(exc), code="no_send_backend") from exc
    if message.bulk and unsubscribe.available(postern) and not backend.confirms:
        return _hand_over_each(postern, backend, message, remote)
    return _send(backend, message, _outbound(message, remote, _signed(postern, backend, message, bytes(message.raw))))


def _hand_over_each(postern, backend, message: Message, remote: list[str]) -> SendResult:
    """Bulk mail: one copy per recipient, each with its own one-click unsubscribe link
    (postern.core.mail.unsubscribe) and signed with it; a failure of one copy is that
    recipient's outcome. Copies go one after another, so before each the attempt
    extends its claim (a hundred slow copies must not outlive the lease and be sent
    again by another attempt), and each outcome is written as soon as it is known (a
    crash part-way resends only the copies not yet handed over)."""
    outcomes: dict[str, RecipientOutcome] = {}
    last = None
    for address in remote:
        if not claims.extend(postern, message):
            outcomes[address] = RecipientOutcome("deferred", "claim_lost", "the attempt no longer held the message")
            continue
        lines = unsubscribe.headers_for(postern, message.customer_id, address, message.id)
        try:
            raw = _signed(postern, backend, message, lines + bytes(message.raw))
            extra = dict(line.split(": ", 1) for line in lines.decode().splitlines())
            outbound = _outbound(message, [address], raw, extra, verptag.tag(message.id, address))
            result = _send(backend, message, outbound)
        except TemporaryFailure as exc:
            outcomes[address] = RecipientOutcome("deferred", exc.code or "", str(exc))
        except PermanentFailure as exc:
            outcomes[address] = RecipientOutcome("failed", exc.code or "", str(exc))
        else:
            last = result
            default = RecipientOutcome("captured" if result.status == "captured" else "sent")
            outcomes[address] = result.recipients.get(address, default)
        if outcomes[address].status != "bounced":  # a bounce is recorded with its event and suppression
            with write_transaction():  # counted as an attempt when the whole attempt is recorded
                recipients.record(message.id, {address: outcomes[address]}, attempt=False)
    if last is None:
        return SendResult(backend.name, None, "sent", recipients=outcomes)
    return SendResult(backend.name, last.backend_message_id, last.status, recipients=outcomes)


def _signed(postern, backend, message: Message, raw: bytes) -> bytes:
    try:
        return backend.dkim_sign(postern, message.envelope_from, raw)
    except dkim.DkimKeyUnavailable as exc:
        log.error("cannot DKIM-sign %s: %s", message.id, exc)
        raise TemporaryFailure(str(exc), code="dkim_key_unavailable") from exc


def _outbound(
    message: Message, remote: list[str], raw: bytes, extra_headers: dict | None = None, tag: str = ""
) -> OutboundMessage:
    attachments = tuple(
        OutboundAttachment(a.filename, a.content_type, bytes(a.data), a.content_id, a.inline)
        for a in message.attachments
    )
    people = [p for field in (message.to_addresses, message.cc_addresses, message.reply_to) for p in json.loads(field)]
    return OutboundMessage(
        message_id=message.message_id_header,
        sender=message.envelope_from,
        recipients=tuple(remote),
        raw=raw,
        postern_id=message.id,
        subject=message.subject,
        text=message.text,
        html=message.html,
        from_name=message.from_name,
        to=tuple(p["address"] for p in json.loads(message.to_addresses)),
        cc=tuple(p["address"] for p in json.loads(message.cc_addresses)),
        bcc=tuple(r for r in remote if r not in _visible(message)),
        reply_to=tuple(p["address"] for p in json.loads(message.reply_to)),
        attachments=attachments,
        headers={**_headers(message), **(extra_headers or {})},
        names={p["address"]: p["name"] for p in people if p.get("name")},
        attempt=message.attempts + 1,
        return_path=reports.verp_address(message.id, message.envelope_from.rpartition("@")[2], tag),
    )


def _send(backend, message: Message, outbound: OutboundMessage):
    try:
        return backend.send(outbound)
    except BackendError:
        raise
    except Exception as exc:  # a backend bug must not lose the message: retry, and log it
        log.exception("send backend %s raised unexpectedly for %s", backend.name, message.id)
        raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc


def _headers(message: Message) -> dict[str, str]:
    """The headers a field-based backend must carry over: threading and the sender's X-… ones."""
    found = {name: value for name, value in json.loads(message.headers)}
    if message.in_reply_to:
        found["In-Reply-To"] = message.in_reply_to
    if message.references:
        found["References"] = message.references
    return found


def _visible(message: Message) -> set[str]:
    return {p["address"] for p in json.loads(message.to_addresses) + json.loads(message.cc_addresses)}
