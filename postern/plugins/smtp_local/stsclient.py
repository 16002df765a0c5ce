"""MTA-STS, the sending side (RFC 8461): may mail for a domain go to this MX, and must
it go over verified TLS?

A domain announces a policy with a TXT record ``_mta-sts.<domain>`` (``v=STSv1;
id=...``) and serves it at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``. The
policy is cached for its ``max_age`` and fetched again only when the record's id
changes or the cached copy expires; while a cached policy is unexpired it is kept even
when DNS or HTTPS fail, which is what keeps an attacker who blocks those lookups from
downgrading delivery to plaintext (RFC 8461 5.1). Without any policy, delivery goes on
as if the domain had none. The serving side is ``postern.core.mtasts``.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from postern.core.errors import TemporaryFailure
from postern.plugins.smtp_local.mx import MxResolver

log = logging.getLogger("postern.send.mta_sts")

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.3: senders may cap the policy's size at 64 KB
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most a year
MODES = ("none", "testing", "enforce")


@dataclass(frozen=True)
class StsPolicy:
    """One domain's fetched policy; ``expires`` is on the ``time.monotonic`` clock."""

    domain: str
    id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    expires: float

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"


def parse_txt(strings: list[str]) -> str | None:
    """The policy id from the ``_mta-sts`` TXT records, or None when there is no
    usable record: none, several (RFC 8461 3.1 says treat that as none), a bad one."""
    found = [s for s in strings if s.strip().startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in found[0].split(";") if part.strip())
    ident = fields.get("id", "").strip()
    if fields.get("v") != "STSv1" or not ident.isalnum() or len(ident) > 32 or not ident.isascii():
        return None
    return ident


def parse_policy(text: str) -> tuple[str, tuple[str, ...], int]:
    """(mode, mx patterns, max_age) of a policy file; ValueError names what is wrong."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("version must be STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    age = (fields.get("max_age") or [""])[0]
    if not age.isdigit() or int(age) > MAX_AGE_LIMIT:
        raise ValueError(f"max_age must be 0-{MAX_AGE_LIMIT} seconds, not {age!r}")
    mx = tuple(p.lower().rstrip(".") for p in fields.get("mx", []) if p)
    if mode != "none" and not mx:
        raise ValueError("a policy in testing or enforce mode must name at least one mx")
    return mode, mx, int(age)


def mx_allowed(policy: StsPolicy | None, host: str) -> bool:
    """Whether ``host`` may receive the domain's mail: it equals one of the policy's mx
    patterns, or a ``*.`` pattern with exactly one more label in front (RFC 8461 4.1).
    Without a policy, or in mode none, every host is allowed."""
    if policy is None or policy.mode == "none":
        return True
    host = host.lower().rstrip(".")
    for pattern in policy.mx:
        if pattern.startswith("*."):
            label, dot, rest = host.partition(".")
            if dot and label and rest == pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a name at an address we resolved ourselves (through the configured
    resolver, as the MX lookups are), the certificate checked against the name."""

    def __init__(self, host: str, address: str, port: int, *, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class StsClient:
    """Finds and caches MTA-STS policies. Thread-safe; the cache lives in memory, so a
    restart fetches again (the RFC allows it: the TXT record is looked up anyway)."""

    def __init__(
        self, resolver: MxResolver, *, https_port: int = 443, ca_file: str = "", timeout: float = 10.0, clock=None
    ):
        if not 0 < https_port < 65536:
            raise ValueError(f"https_port must be 1-65535, not {https_port}")
        self.resolver = resolver
        self.https_port = https_port
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file or None)
        self._clock = clock or time.monotonic
        self._cache: dict[str, StsPolicy] = {}
        self._lock = threading.Lock()

    def policy(self, domain: str) -> StsPolicy | None:
        """``domain``'s policy in force, or None when it has none we can use. Never
        raises: a failure to learn a policy is logged and means "no policy" unless an
        unexpired one is cached."""
        domain = domain.lower().rstrip(".")
        now = self._clock()
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            cached = None
        strings = self.resolver.txt(f"_mta-sts.{domain}")
        ident = parse_txt(strings) if strings else None
        if ident is None or (cached is not None and cached.id == ident):
            return cached  # no record (or DNS failed): keep what is cached, if anything
        try:
            mode, mx, max_age = parse_policy(self._fetch(domain))
        except (OSError, ValueError, http.client.HTTPException, TemporaryFailure) as exc:
            log.warning("MTA-STS policy of %s could not be fetched: %s", domain, exc)
            return cached
        fetched = StsPolicy(domain, ident, mode, mx, max_age, now + max_age)
        with self._lock:
            self._cache[domain] = fetched
        return fetched

    def _fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        addresses = self.resolver.addresses(host)
        if not addresses:
            raise OSError(f"{host} has no address")
        deadline = self._clock() + 2 * self.timeout
        # Only the first address: the lookup is bounded, and a policy that cannot be
        # fetched just means "no (new) policy" until the next message.
        conn = _PinnedHTTPS(host, addresses[0], self.https_port, context=self._context, timeout=self.timeout)
        try:
            conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host, "User-Agent": "postern"})
            reply = conn.getresponse()
            # http.client never follows redirects, and RFC 8461 3.3 forbids following them.
            if reply.status != 200:
                raise ValueError(f"{host} answered HTTP {reply.status}")
            kind = (reply.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "text/plain":
                raise ValueError(f"{host} served {kind or 'no content type'}, not text/plain")
            body = b""
            while len(body) <= MAX_POLICY_BYTES:
                chunk = reply.read(8192)
                if not chunk:
                    break
                body += chunk
                if self._clock() > deadline:  # a server that trickles the body
                    raise TimeoutError(f"{host}: policy not received within {2 * self.timeout:g} s")
            if len(body) > MAX_POLICY_BYTES:
                raise ValueError(f"{host}: policy larger than {MAX_POLICY_BYTES} bytes")
            return body.decode("utf-8")
        finally:
            conn.close()
