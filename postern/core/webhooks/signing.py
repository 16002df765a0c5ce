"""Standard Webhooks signatures, and signing secrets encrypted at rest.

A secret is ``whsec_`` + base64 of 32 random bytes. A signature is
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; during a rotation's grace
period the old and new secrets both sign, space-separated.

Secrets must stay usable for signing, so unlike API keys they cannot be hashed:
they are encrypted with AES-256-GCM under a key kept in ``server_secret``
(``webhook_secrets``), with the webhook id as associated data so a ciphertext
cannot be moved to another webhook's row. docs/security.md says what this does
and does not protect against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import weakref

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postern.core.db import database
from postern.core.errors import SetupError
from postern.core.models import ServerSecret

PREFIX = "whsec_"
SECRET_BYTES = 32
CIPHER_VERSION = "v1"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per live secret."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)


#: The key per open database (it never changes for one); a new database object, as each
#: test or process opens, is looked up afresh.
_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _key() -> bytes:
    db = database.obj
    key = _keys.get(db)
    if key is None:
        key = _keys[db] = bytes.fromhex(ServerSecret.get_by_id("webhook_secrets").value)
    return key


def encrypt(secret: str, webhook_id: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key()).encrypt(nonce, secret.encode(), webhook_id.encode())
    return f"{CIPHER_VERSION}:{base64.b64encode(nonce + sealed).decode()}"


class SecretUnreadable(SetupError):
    """A stored secret does not decrypt (wrong server key, or a row tampered with)."""


def decrypt(stored: str, webhook_id: str) -> str:
    version, _, blob = stored.partition(":")
    if version != CIPHER_VERSION:
        raise SecretUnreadable(f"unknown secret encoding '{version[:10]}'")
    raw = base64.b64decode(blob)
    try:
        return AESGCM(_key()).decrypt(raw[:12], raw[12:], webhook_id.encode()).decode()
    except InvalidTag:
        raise SecretUnreadable("the secret does not decrypt with this server's key") from None
