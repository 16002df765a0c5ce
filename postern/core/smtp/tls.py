"""STARTTLS for the SMTP listener: the server's ``SSLContext`` from a certificate and key
on disk, rebuilt when either file changes, so a renewed certificate (certbot, acme.sh)
takes effect at the next connection without a restart (docs/trust.md)."""

from __future__ import annotations

import logging
import os
import ssl

log = logging.getLogger("postern.smtp")

#: TLS 1.0 and 1.1 are deprecated (RFC 8996): a client that offers nothing newer fails the handshake.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``cert`` (PEM, the chain after the certificate) and ``key``.
    Raises ``OSError`` or ``ssl.SSLError`` when they do not load as a pair."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no client certificates asked for
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(cert, key)
    return context


def check_tls_files(cert: str, key: str, require_tls: bool) -> None:
    """The checks across the TLS options, for an options dataclass's ``__post_init__``:
    both files or neither, ``require_tls`` only with them, and the pair must load."""
    if bool(cert) != bool(key):
        given, missing = ("tls_cert", "tls_key") if cert else ("tls_key", "tls_cert")
        raise ValueError(f"{given} is set but {missing} is not: STARTTLS needs both files")
    if require_tls and not cert:
        raise ValueError("require_tls needs tls_cert and tls_key: without them STARTTLS is not offered")
    if cert:
        try:
            server_context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls_cert and tls_key do not load as a certificate and its key: {exc}") from None


def readable_file_or_empty(value: str) -> str:
    """A ``check``: a file this process can read, or "" for none."""
    if value:
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"must be a readable file, got '{value}': {exc.strerror}") from None
    return value


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ReloadingContext:
    """The server context for a certificate and key, rebuilt when either file changes.

    ``current()`` is called at each new connection: two ``stat`` calls, no reading, while
    the files stay as they are. A change that does not load (a certificate written before
    its key, a file half copied) keeps the previous context and is logged once; the next
    change is tried again."""

    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        self._context: ssl.SSLContext | None = None
        self._loaded: object = None  # the stamps of the files the context was built from
        self._failed: object = None  # the stamps that last failed to load, logged once
        self.current()  # fails start-up when the files do not load

    def current(self) -> ssl.SSLContext:
        try:
            stamps = (_stamp(self.cert), _stamp(self.key))
        except OSError as exc:
            return self._keep(exc, ("missing", str(exc)))
        if stamps == self._loaded:
            return self._context
        try:
            context = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            return self._keep(exc, stamps)
        if self._context is not None:
            log.info("STARTTLS certificate reloaded from %s", self.cert)
        self._context, self._loaded, self._failed = context, stamps, None
        return context

    def _keep(self, exc: Exception, stamps: object) -> ssl.SSLContext:
        if self._context is None:
            raise exc
        if stamps != self._failed:
            log.warning("kept the previous STARTTLS certificate: %s or %s does not load: %s", self.cert, self.key, exc)
            self._failed = stamps
        return self._context


def tls_of(session) -> str | None:
    """The protocol version and cipher of an aiosmtpd session after STARTTLS, e.g.
    "TLSv1.3 TLS_AES_256_GCM_SHA384"; None for a plaintext session."""
    extra = getattr(session, "ssl", None)
    ssl_object = extra.get("ssl_object") if extra else None
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()} {cipher[0]}" if cipher else ssl_object.version()
