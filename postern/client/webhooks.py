"""Verify a Postern webhook delivery (the Standard Webhooks scheme).

    from postern.client import verify_webhook
    event = verify_webhook(request_body_bytes, request_headers, "whsec_...")

Standard library only: usable in any receiver without the server installed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 300
PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or too old or too new to accept."""


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict:
    """Return the parsed event if ``body`` was signed with ``secret`` within ``tolerance``
    seconds of now; raise ``WebhookVerificationError`` otherwise.

    ``headers`` may be any mapping (names are matched case-insensitively); ``body``
    must be the exact bytes received, before any JSON parsing. ``secret`` may be
    given with or without its ``whsec_`` prefix.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if sent_at > current + tolerance:
        raise WebhookVerificationError("webhook-timestamp is in the future")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ secret") from None
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            try:
                return json.loads(raw)
            except ValueError:
                raise WebhookVerificationError("the body is signed but is not JSON") from None
    raise WebhookVerificationError("no signature matches")
