"""Postern's outbound message as the JSON body of ACS ``emails:send``, and ACS answers
as Postern's temporary and permanent failures. No SDK import: plain data."""

from __future__ import annotations

import base64
import json

from postern.core.backends import OutboundMessage, PermanentFailure, TemporaryFailure
from postern.core.mail.headers import unsafe_reason
from postern.plugins.acs.options import AcsOptions

#: Headers ACS is given besides its own fields: threading and Postern's Message-ID, so a
#: reply from the recipient threads back onto the agent's conversation.
THREADING = ("Message-ID", "In-Reply-To", "References")
#: Seconds to wait after a 429 or 5xx that names no Retry-After.
DEFAULT_RETRY = 30.0


def email_body(message: OutboundMessage, options: AcsOptions) -> dict:
    """The ``EmailMessage`` of ACS's REST API (api-version 2025-09-01)."""
    _refuse_unsafe_text(message)
    inbox = message.sender
    sender = inbox if options.sender_mode == "inbox" else options.sender
    reply_to = list(message.reply_to)
    if options.sender_mode == "fixed" and not reply_to:
        reply_to = [inbox]  # replies still come back to the agent's inbox
    # ACS's recipient lists are both the headers and the envelope: recipients served by
    # this Postern already have their copy (ingest), so they are left out, not sent twice.
    remote = set(message.recipients)
    recipients = {
        kind: [_person(a, message) for a in addresses if a in remote]
        for kind, addresses in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc))
        if any(a in remote for a in addresses)
    }
    content = {"subject": message.subject}
    if message.text:
        content["plainText"] = message.text
    if message.html:
        content["html"] = message.html
    body = {
        "senderAddress": sender,
        "recipients": recipients,
        "content": content,
        "headers": _headers(message),
        "userEngagementTrackingDisabled": not options.engagement_tracking,
    }
    if reply_to:
        body["replyTo"] = [_person(a, message) for a in reply_to]
    if message.attachments:
        body["attachments"] = [_attachment(a) for a in message.attachments]
    return body


def _refuse_unsafe_text(message: OutboundMessage) -> None:
    """ACS writes the headers from these fields itself, and how it treats an encoded
    word in them is not ours to check: a subject, name or header value with a control
    character, or with an encoded word hiding one, is refused for good, never sent."""
    texts = [("subject", message.subject), *(("name", n) for n in message.names.values())]
    texts += [(f"header {name}", value) for name, value in message.headers.items()]
    for what, value in texts:
        reason = unsafe_reason(value)
        if reason is not None:
            raise PermanentFailure(f"not sent through ACS: the {what} {reason}", code="unsafe_header")


def _person(address: str, message: OutboundMessage) -> dict:
    name = message.names.get(address)
    return {"address": address, "displayName": name} if name else {"address": address}


def _headers(message: OutboundMessage) -> dict[str, str]:
    found = {"Message-ID": message.message_id}
    found.update({k: v for k, v in message.headers.items() if k in THREADING or k.lower().startswith("x-")})
    return found


def _attachment(att) -> dict:
    data = base64.b64encode(att.data).decode()
    found = {"name": att.filename, "contentType": att.content_type, "contentInBase64": data}
    if att.content_id:
        found["contentId"] = att.content_id.strip("<>")
    return found


def failure(status: int, headers, body: bytes | str | None, what: str) -> Exception:
    """An ACS error answer as Postern's failure: 429 and 5xx are temporary (Retry-After
    honoured), any other 4xx permanent; ACS's error code and message are kept."""
    code, text = error_of(body)
    summary = f"ACS {what}: HTTP {status} {code}: {text}".rstrip(": ")
    if status == 429 or status >= 500 or status == 408:
        return TemporaryFailure(summary, retry_after=retry_after(headers) or DEFAULT_RETRY, code=code or str(status))
    return PermanentFailure(summary, code=code or str(status))


def error_of(body: bytes | str | dict | None) -> tuple[str, str]:
    """``(code, message)`` of an ACS ``ErrorResponse`` (``{"error": {"code", "message"}}``)."""
    data = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return "", (body.decode(errors="replace") if isinstance(body, bytes) else body)[:300]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), str(error.get("message") or "")[:1000]


def retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After`` (seconds)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000), ("x-ms-retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date: rare from ACS; fall back to our own schedule
    return None
