"""Postern keys: ``pk_<kind>_<random><checksum>``.

256 random bits in base62, then a 6-character base62 CRC32 of everything before it,
so a secret scanner or a typo check can reject a key without a database read
(GitHub's token format does the same). Only the SHA-256 of a key is stored, with a
short display prefix; a key is shown once, when minted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

from postern.core.errors import AuthenticationFailed

KINDS = ("admin", "enroll", "agent")
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 43  # 256 bits in base62
CHECKSUM_LENGTH = 6
DISPLAY_CHARS = 8


class MalformedKey(AuthenticationFailed, ValueError):
    """Not a Postern key: wrong shape, unknown kind, or a checksum that does not match."""


@dataclass(frozen=True)
class MintedKey:
    """A new key: ``plaintext`` goes to the caller once; the rest is stored."""

    kind: str
    plaintext: str
    prefix: str
    hash: str


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode()), CHECKSUM_LENGTH)


def with_checksum(kind: str, body: str) -> str:
    """A well-formed key of ``kind`` from a chosen ``body`` (mock mode's fixed keys): only
    ever for keys that are meant to be public, never for real credentials (see ``mint``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind '{kind}'")
    if len(body) != BODY_LENGTH or any(c not in ALPHABET for c in body):
        raise ValueError(f"a key body is {BODY_LENGTH} base62 characters")
    head = f"pk_{kind}_{body}"
    return head + _checksum(head)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def mint(kind: str) -> MintedKey:
    if kind not in KINDS:
        raise ValueError(f"unknown key kind '{kind}'")
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LENGTH)
    head = f"pk_{kind}_{body}"
    plaintext = head + _checksum(head)
    return MintedKey(kind, plaintext, display_prefix(plaintext), hash_key(plaintext))


def display_prefix(plaintext: str) -> str:
    """What logs, audit rows and listings show: kind plus 8 characters."""
    kind = plaintext.split("_", 2)[1]
    return f"pk_{kind}_{plaintext[len(kind) + 4 :][:DISPLAY_CHARS]}"


def parse_kind(plaintext: str) -> str:
    """The kind of a well-formed key; ``MalformedKey`` for anything else."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != "pk" or parts[1] not in KINDS:
        raise MalformedKey("not a Postern key")
    rest = parts[2]
    if len(rest) != BODY_LENGTH + CHECKSUM_LENGTH or any(c not in ALPHABET for c in rest):
        raise MalformedKey("not a Postern key")
    head, check = plaintext[:-CHECKSUM_LENGTH], plaintext[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(_checksum(head), check):
        raise MalformedKey("key checksum does not match (mistyped or truncated?)")
    return parts[1]


def matches(plaintext: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(plaintext), stored_hash)
