"""Direct delivery: hand a message to each recipient domain's own MX, as an MTA does.

The ``smtp_local`` send backend's ``mode = "direct"`` drives this transport; the
outbox schedules retries per recipient from the results (``RecipientResult``), so
nothing here retries later or keeps a queue. One call delivers to every domain of the
message independently (in parallel), so a message can reach one domain and wait for
another:

- DNS (``mx.py``): MX hosts in preference order, the implicit MX, null MX.
- MTA-STS (``stsclient.py``): an ``enforce`` policy restricts the MX hosts and demands
  STARTTLS with a certificate valid for the MX name; failing that the recipients are
  deferred, never sent in clear. Otherwise TLS is opportunistic.
- A host that refuses the connection, does not greet with 220, or fails TLS: the next
  address, then the next MX. The replies to RCPT and DATA decide each recipient:
  2xx sent, 4xx deferred, 5xx bounced.
- Time: ``timeout`` bounds each socket operation, ``deadline`` one domain's whole
  attempt (a watchdog shuts the socket under a server that answers a byte at a time,
  as ``sender.py`` does for the smarthost); running out is deferred with "timeout".
- A connection that finished a transaction is kept (after RSET) in a small pool per
  (MX host, address) for ``reuse_seconds`` idle and ``reuse_messages`` messages, and
  checked with NOOP before its next use.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from postern.core.errors import PermanentFailure, TemporaryFailure
from postern.plugins.smtp_local.alarms import ALARMS
from postern.plugins.smtp_local.mx import MxResolver
from postern.plugins.smtp_local.pool import Connection, ConnectionPool, close_quietly, cut_off
from postern.plugins.smtp_local.stsclient import StsClient, mx_allowed

log = logging.getLogger("postern.send.direct")

MAX_DOMAINS_IN_PARALLEL = 8
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class RecipientResult:
    #: "sent" | "deferred" | "bounced" (bounced is permanent: 5xx, null MX, NXDOMAIN).
    status: str
    #: The SMTP reply code with its enhanced status ("550 5.1.1"), or a word for what
    #: no server said: "null_mx", "nxdomain", "dns", "mta_sts", "timeout", "connect".
    code: str
    #: Short human text: the remote's reply, at most 500 characters.
    text: str
    #: The MX host that answered, if any.
    mx: str = ""


def _reply(code: int, message: bytes | str, mx: str) -> RecipientResult:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    text = " ".join(text.split())[:500]
    enhanced = _ENHANCED.match(text)
    label = f"{code} {enhanced.group(1)}" if enhanced else str(code)
    if 200 <= code < 300:
        return RecipientResult("sent", label, text, mx)
    if 500 <= code < 600:
        return RecipientResult("bounced", label, text, mx)
    return RecipientResult("deferred", label, text, mx)  # 4xx, and anything malformed


class _Skip(Exception):
    """This address or host cannot take the mail now: try the next one."""

    def __init__(self, code: str, text: str, mx: str = ""):
        super().__init__(text)
        self.code, self.text, self.mx = code, text, mx


def _timed_out(exc: BaseException | None) -> bool:
    """smtplib wraps a socket timeout in SMTPServerDisconnected; look through it."""
    while exc is not None:
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _Watchdog:
    """The deadline of one domain's attempt: when it fires, the socket in use is shut
    down under whatever call is blocked on it (``pool.cut_off``)."""

    def __init__(self, seconds: float):
        self.fired = threading.Event()
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self._alarm = ALARMS.arm(seconds, self._fire)

    def watch(self, client: smtplib.SMTP | None) -> None:
        with self._lock:
            self._client = client
        if client is not None and self.fired.is_set():
            raise TimeoutError("deadline")

    def _fire(self) -> None:
        with self._lock:
            if self._client is not None:
                cut_off(self._client, self.fired)
            else:
                self.fired.set()

    def cancel(self) -> None:
        self._alarm.cancel()


class DirectTransport:
    def __init__(
        self,
        *,
        helo: str,
        source_address: str = "",
        resolver: str = "",
        smtp_port: int = 25,
        timeout: float = 30,
        deadline: float = 120,
        ca_file: str = "",
        mta_sts_https_port: int = 443,
        reuse_seconds: float = 30,
        reuse_messages: int = 100,
        dns_cache: bool = True,
    ):
        if not helo or any(c.isspace() for c in helo):
            raise ValueError(f"helo must be this host's name (for EHLO), not {helo!r}")
        if source_address:
            try:
                ipaddress.ip_address(source_address)
            except ValueError:
                raise ValueError(f"source_address must be an IP address, not {source_address!r}") from None
        if not 0 < smtp_port < 65536:
            raise ValueError(f"smtp_port must be 1-65535, not {smtp_port}")
        if timeout <= 0 or deadline < timeout:
            raise ValueError("timeout must be positive and deadline at least timeout")
        if reuse_seconds < 0 or reuse_messages < 0:
            raise ValueError("reuse_seconds and reuse_messages must not be negative (0: no reuse)")
        self.helo = helo
        self.source_address = source_address
        self.smtp_port = smtp_port
        self.timeout = timeout
        self.deadline = deadline
        self._mx = MxResolver(resolver, timeout=min(timeout, 10), cache=dns_cache)
        try:
            self._verified = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file {ca_file!r} is not a readable PEM file of certificates: {exc}") from None
        # Opportunistic TLS (RFC 7435): without an MTA-STS policy nobody promised a
        # valid certificate, and most MX certificates would fail a check (self-signed,
        # another name). A real MTA encrypts anyway rather than falling back to clear
        # text or refusing, so this context verifies nothing; it still defeats a
        # passive eavesdropper, which is all opportunistic TLS claims.
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._sts = StsClient(self._mx, https_port=mta_sts_https_port, ca_file=ca_file, timeout=min(timeout, 10))
        self._pool = ConnectionPool(reuse_seconds, reuse_messages)

    def deliver(self, sender: str, recipients: Sequence[str], raw: bytes) -> dict[str, RecipientResult]:
        """Try each recipient once; the result says what happened to each (keys are
        the recipients as given). Never raises for a delivery problem."""
        if not isinstance(raw, bytes | bytearray):
            raise TypeError("raw must be the message's bytes")
        if isinstance(recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not one string")
        # smtplib sends bytes as they are; a bare CR or LF in DATA is what SMTP
        # smuggling is made of, and receivers refuse it.
        raw = _LINE_ENDS.sub(b"\r\n", bytes(raw))
        results: dict[str, RecipientResult] = {}
        by_domain: dict[str, list[str]] = {}
        for rcpt in dict.fromkeys(recipients):
            local, at, domain = rcpt.rpartition("@")
            if not at or not local or not domain or any(c.isspace() or c in "<>" for c in rcpt):
                results[rcpt] = RecipientResult("bounced", "bad_address", f"not an email address: {rcpt!r}")
            else:
                by_domain.setdefault(domain.lower().rstrip("."), []).append(rcpt)
        if len(by_domain) == 1:
            [(domain, rcpts)] = by_domain.items()
            results.update(self._deliver_domain(domain, sender, rcpts, raw))
        elif by_domain:
            with ThreadPoolExecutor(min(len(by_domain), MAX_DOMAINS_IN_PARALLEL), "postern-direct") as pool:
                futures = [pool.submit(self._deliver_domain, d, sender, r, raw) for d, r in by_domain.items()]
                for future in futures:
                    results.update(future.result())
        return results

    def close(self) -> None:
        """QUIT every pooled connection."""
        self._pool.close()

    def _deliver_domain(self, domain: str, sender: str, rcpts: list[str], raw: bytes) -> dict[str, RecipientResult]:
        def every(status: str, code: str, text: str, mx: str = "") -> dict[str, RecipientResult]:
            return {r: RecipientResult(status, code, text[:500], mx) for r in rcpts}

        watchdog = _Watchdog(self.deadline)
        try:
            try:
                hosts = self._mx.destinations(domain)
            except PermanentFailure as exc:
                return every("bounced", exc.code, str(exc))
            except TemporaryFailure as exc:
                return every("deferred", exc.code, str(exc))
            policy = self._sts.policy(domain)
            enforce = policy is not None and policy.enforced
            allowed = [h for h in hosts if mx_allowed(policy, h)]
            if len(allowed) < len(hosts):
                log.warning("MTA-STS (%s) of %s does not list MX %s", policy.mode, domain, set(hosts) - set(allowed))
            if enforce:
                hosts = allowed
                if not hosts:
                    return every("deferred", "mta_sts", f"no MX of {domain} matches its MTA-STS policy")
            last = _Skip("no_address", f"no MX host of {domain} has an address")
            for host in hosts:
                try:
                    addresses = [a for a in self._mx.addresses(host) if self._reachable(a)]
                except TemporaryFailure as exc:
                    last = _Skip(exc.code, str(exc))
                    continue
                for address in addresses:
                    if watchdog.fired.is_set():
                        break
                    try:
                        conn = self._session(host, address, domain if enforce else "", watchdog)
                    except _Skip as skip:
                        log.info("%s (%s) for %s: %s", host, address, domain, skip.text)
                        last = skip
                        continue
                    return self._transaction(conn, sender, rcpts, raw, watchdog)
            if watchdog.fired.is_set():
                return every("deferred", "timeout", f"{domain}: not done within {self.deadline:g} s", last.mx)
            return every("deferred", last.code, last.text, last.mx)
        finally:
            watchdog.cancel()

    def _reachable(self, address: str) -> bool:
        """An address of the source address's family (a bound socket reaches no other)."""
        if not self.source_address:
            return True
        return (":" in address) == (":" in self.source_address)

    def _session(self, host: str, address: str, sts_domain: str, watchdog: _Watchdog) -> Connection:
        """A greeted (and, as offered or required, encrypted) session with ``host`` at
        ``address``: a pooled one that still answers NOOP, else a new one. With
        ``sts_domain`` (an enforced MTA-STS policy) only a verified TLS session does."""
        pooled = self._pool.take(host, address, verified=bool(sts_domain))
        while pooled is not None:
            try:
                watchdog.watch(pooled.client)  # raises TimeoutError once the deadline passed
                if pooled.client.noop()[0] == 250:
                    return pooled
            except (OSError, smtplib.SMTPException):
                pass
            close_quietly(pooled.client)
            pooled = self._pool.take(host, address, verified=bool(sts_domain))
        return self._connect(host, address, sts_domain, watchdog, tls=True)

    def _connect(self, host: str, address: str, sts_domain: str, watchdog: _Watchdog, *, tls: bool) -> Connection:
        source = (self.source_address, 0) if self.source_address else None
        client = smtplib.SMTP(local_hostname=self.helo, timeout=self.timeout, source_address=source)
        # The name STARTTLS checks the certificate against: the MX name, while the
        # socket goes to the address we resolved (smtplib would take the address).
        client._host = host
        encrypted = False
        try:
            watchdog.watch(client)
            code, message = client.connect(address, self.smtp_port)
            if watchdog.fired.is_set():  # it fired before the socket was there to cut
                raise TimeoutError("deadline")
            if code != 220:
                raise _Skip(_reply(code, message, host).code, f"{host} greeted with {code}", host)
            if client.ehlo()[0] != 250 and client.helo()[0] != 250:
                raise _Skip("helo", f"{host} refused EHLO and HELO", host)
            if sts_domain and not client.has_extn("starttls"):
                raise _Skip("mta_sts", f"{host} offers no STARTTLS, required by {sts_domain}'s MTA-STS policy", host)
            if tls and client.has_extn("starttls"):
                try:
                    client.starttls(context=self._verified if sts_domain else self._opportunistic)
                    encrypted = True
                except smtplib.SMTPResponseException as exc:
                    if sts_domain:
                        raise _Skip("mta_sts", f"{host} refused STARTTLS ({exc.smtp_code})", host) from None
                    # STARTTLS refused, the session is still there, in clear text.
                except (OSError, smtplib.SMTPException) as exc:
                    if sts_domain:
                        raise _Skip(
                            "mta_sts", f"TLS with {host} failed ({sts_domain}'s MTA-STS): {exc}", host
                        ) from None
                    if watchdog.fired.is_set():
                        raise
                    # As MTAs do for opportunistic TLS: a handshake that fails is tried
                    # again without TLS rather than holding the mail back.
                    log.info("TLS with %s (%s) failed, delivering without: %s", host, address, exc)
                    close_quietly(client)
                    return self._connect(host, address, "", watchdog, tls=False)
                client.ehlo()  # RFC 3207: what was learned before TLS is forgotten
        except _Skip:
            close_quietly(client)
            raise
        except (OSError, smtplib.SMTPException) as exc:
            close_quietly(client)
            code = "timeout" if watchdog.fired.is_set() or _timed_out(exc) else "connect"
            raise _Skip(code, f"{host} ({address}): {exc or type(exc).__name__}") from None
        return Connection(client, host, address, verified=encrypted and bool(sts_domain))

    def _transaction(
        self, conn: Connection, sender: str, rcpts: list[str], raw: bytes, watchdog: _Watchdog
    ) -> dict[str, RecipientResult]:
        """MAIL, RCPT for each recipient, DATA when any was accepted."""
        client, host = conn.client, conn.host
        results: dict[str, RecipientResult] = {}
        try:
            options = []
            if client.has_extn("size"):
                options.append(f"SIZE={len(raw)}")
            if client.has_extn("8bitmime") and not raw.isascii():
                options.append("BODY=8BITMIME")
            if not (sender + "".join(rcpts)).isascii():
                if not client.has_extn("smtputf8"):
                    text = f"{host} does not accept internationalised addresses (no SMTPUTF8)"
                    self._release(conn, watchdog)
                    return {r: RecipientResult("bounced", "smtputf8", text, host) for r in rcpts}
                options.append("SMTPUTF8")
            code, message = client.mail(sender, options)
            if not 200 <= code < 300:
                refused = _reply(code, message, host)
                self._release(conn, watchdog)
                return dict.fromkeys(rcpts, refused)
            accepted = []
            for rcpt in rcpts:
                code, message = client.rcpt(rcpt)
                if 200 <= code < 300:
                    accepted.append(rcpt)
                else:
                    results[rcpt] = _reply(code, message, host)
            if accepted:
                try:
                    code, message = client.data(raw)
                except smtplib.SMTPDataError as exc:  # DATA itself refused (not 354)
                    code, message = exc.smtp_code, exc.smtp_error
                results.update(dict.fromkeys(accepted, _reply(code, message, host)))
                conn.messages += 1
        except (OSError, smtplib.SMTPException) as exc:
            close_quietly(client)
            # Recipients whose DATA reply was not heard: the message may have arrived,
            # but only a retry is safe (RFC 5321 6.1 accepts the rare duplicate).
            if watchdog.fired.is_set() or _timed_out(exc):
                lost = RecipientResult("deferred", "timeout", f"{host}: not done within the time allowed", host)
            else:
                lost = RecipientResult("deferred", "connection", f"{host}: {exc}"[:500], host)
            return {r: results.get(r, lost) for r in rcpts}
        self._release(conn, watchdog)
        return {r: results[r] for r in rcpts}

    def _release(self, conn: Connection, watchdog: _Watchdog) -> None:
        watchdog.watch(None)  # the pooled connection no longer belongs to this attempt
        self._pool.give(conn)
