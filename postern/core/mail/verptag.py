"""The recipient tag of a per-recipient VERP address, ``bounce-<message id>-<tag>@…``.

Bulk mail leaves one copy per recipient, and every recipient sees its copy's envelope
sender (Return-Path). With one address per message, any recipient could forge a bounce
naming another recipient of the same newsletter and get that address suppressed. Each
copy's address therefore carries a tag, an HMAC of the message id and the recipient
under a server secret: a report to that address can only be about that recipient, and
a tag cannot be made for anyone else without the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from postern.core.models import ServerSecret

KEY_ROW = "verp_tags"


def _secret() -> bytes:
    """Read each time (one primary-key lookup per copy or report): a cached key would
    outlive a restored database."""
    row = ServerSecret.get_or_none(ServerSecret.name == KEY_ROW)
    if row is None:
        # Made by whichever process needs it first; every process then reads the same one.
        ServerSecret.insert(name=KEY_ROW, value=secrets.token_hex(32)).on_conflict_ignore().execute()
        row = ServerSecret.get_by_id(KEY_ROW)
    return bytes.fromhex(row.value)


def tag(message_id: str, address: str) -> str:
    mac = hmac.new(_secret(), f"{message_id}\n{address.strip().lower()}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").lower()[:16]


def names(message_id: str, address: str, given: str) -> bool:
    """Whether tag ``given`` was made for ``address`` on this message (constant time)."""
    return hmac.compare_digest(tag(message_id, address), given)
