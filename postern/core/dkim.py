"""DKIM: one RSA key pair per tenant domain, its public record, and signing.

The private key is stored sealed with AES-256-GCM under a key-encryption key (KEK)
that never lives in the database, so a database dump or backup alone does not give
anyone the power to sign a tenant's mail. The KEK is derived from
``mail.dkim_key_secret`` when set (the way to share it across hosts), otherwise it is
a random key in ``<data_dir>/secrets/dkim.key`` created on first use (mode 0600).
The sealed blob is bound to its domain and selector (AEAD associated data), so a row
copied onto another domain does not open.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
from pathlib import Path

import peewee

from postern.core import zonebell
from postern.core.db import write_transaction
from postern.core.errors import SetupError
from postern.core.models import Customer, DkimKey

log = logging.getLogger("postern.dkim")

KEY_BITS = 2048
DEFAULT_SELECTOR = "postern"
SEAL_VERSION = "v1"
#: Headers signed: those a forwarder must not change, and those that would mislead if added.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references")
SIGNED_HEADERS += (b"reply-to", b"mime-version", b"content-type", b"content-transfer-encoding")
#: RFC 8058 section 4: a one-click unsubscribe is honoured only when the signature covers it.
SIGNED_HEADERS += (b"list-unsubscribe", b"list-unsubscribe-post")


class DkimKeyUnavailable(SetupError):
    """The private key cannot be opened (wrong or missing key-encryption key)."""


def kek(config) -> bytes:
    """The key-encryption key for this installation."""
    secret = config.mail.dkim_key_secret
    if secret:
        return hashlib.sha256(b"postern-dkim-kek\0" + str(secret).encode()).digest()
    path = Path(config.data_dir) / "secrets" / "dkim.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(os.urandom(32).hex())
    value = path.read_text().strip()
    if len(value) != 64:
        raise DkimKeyUnavailable(f"{path} is not a 32-byte hex key")
    return bytes.fromhex(value)


def _aad(domain: str, selector: str) -> bytes:
    return f"postern-dkim:{domain}:{selector}".encode()


def seal(key: bytes, plaintext: bytes, domain: str, selector: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext, _aad(domain, selector))
    return f"{SEAL_VERSION}.{base64.b64encode(nonce + sealed).decode()}"


def unseal(key: bytes, sealed: str, domain: str, selector: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    version, _, body = sealed.partition(".")
    if version != SEAL_VERSION:
        raise DkimKeyUnavailable(f"DKIM key of {domain}: unknown sealing version '{version[:10]}'")
    blob = base64.b64decode(body)
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], _aad(domain, selector))
    except InvalidTag:
        raise DkimKeyUnavailable(
            f"the DKIM key of {domain} was sealed with another key-encryption key: "
            "every sending host needs the same mail.dkim_key_secret (or secrets/dkim.key)"
        ) from None


def ensure_key(config, customer: Customer, domain: str, selector: str) -> DkimKey:
    """The domain's key pair, generated on first need (concurrent callers get one key)."""
    found = DkimKey.get_or_none(DkimKey.domain == domain)
    if found is not None:
        return found
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        with write_transaction():
            DkimKey.create(
                domain=domain,
                customer=customer.id,
                selector=selector,
                public_key=base64.b64encode(public).decode(),
                private_key_sealed=seal(kek(config), pem, domain, selector),
            )
    except peewee.IntegrityError:
        return DkimKey.get_by_id(domain)  # a concurrent caller stored its key first; theirs is published
    log.info("generated a DKIM key for %s (selector %s)", domain, selector)
    zonebell.ring([domain])  # DNS servers publish it before any mail signed with it arrives
    return DkimKey.get_by_id(domain)


def txt_value(key: DkimKey) -> str:
    """The TXT record published at ``<selector>._domainkey.<domain>``."""
    return f"v=DKIM1; k=rsa; p={key.public_key}"


def sign(config, key: DkimKey, raw: bytes) -> bytes:
    """``raw`` with a DKIM-Signature header for ``key``'s domain prepended."""
    import dkim

    pem = unseal(kek(config), key.private_key_sealed, key.domain, key.selector)
    present = {line.split(b":", 1)[0].strip().lower() for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")}
    headers = [h for h in SIGNED_HEADERS if h in present]
    header = dkim.sign(
        raw,
        key.selector.encode(),
        key.domain.encode(),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
    )
    return header + raw
