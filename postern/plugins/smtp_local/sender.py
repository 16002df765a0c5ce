"""The ``smtp_local`` send backend: deliver directly, relay through a smarthost, or capture.

Recipients served by this Postern never reach a send backend: the core delivers
them through its ingest path. For the rest, by ``mode``:

- ``direct``: to each recipient domain's MX (postern/plugins/smtp_local/direct.py),
  each recipient with its own outcome, deferred ones retried for days (RFC 5321
  4.5.4) on ``retry_minutes`` within ``queue_lifetime_hours``;
- ``relay`` (the default when ``smarthost`` is set): over SMTP to the smarthost
  (STARTTLS and AUTH optional), which does the long retries itself;
- ``capture`` (the default without one): kept in Postern's store with status
  ``captured`` and sent nowhere, the safe default for development.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass

from postern.core.backends import (
    Finding,
    OutboundMessage,
    PermanentFailure,
    RecipientOutcome,
    Sender,
    SendResult,
    TemporaryFailure,
)
from postern.core.options import host_port_or_empty, option
from postern.plugins.smtp_local.alarms import ALARMS
from postern.plugins.smtp_local.pool import cut_off


def _ca_file(value: str) -> str:
    if value:
        try:
            ssl.create_default_context(cafile=value)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"'{value}' is not a readable PEM file of certificates: {exc}") from None
    return value


def _mechanisms(value: tuple[str, ...]) -> tuple[str, ...]:
    if not all(m and " " not in m for m in value):
        raise ValueError('must be a list of SPF mechanisms such as "mx" or "include:spf.example"')
    return value


@dataclass(frozen=True)
class SmtpLocalSendOptions:
    """``[send.smtp_local]``."""

    #: host:port of the relay; empty captures (keeps the message, sends it nowhere).
    smarthost: str = option("", check=host_port_or_empty, help="host:port of the relay; empty: capture")
    starttls: bool = option(True)
    username: str = option("")
    password: str = option("", secret=True)
    #: Seconds each socket operation with the relay may take.
    timeout: int = option(30)
    #: Seconds one relay attempt may take in all (0: 4 x ``timeout``). ``timeout``
    #: bounds each socket operation only: a relay that answers a byte at a time
    #: would otherwise hold the attempt past the outbox's lease.
    deadline: int = option(0)
    helo: str = option("")
    #: PEM file of the CAs to trust for the smarthost's certificate (a private CA);
    #: empty trusts the system's store. Verification is never switched off.
    ca_file: str = option("", check=_ca_file)
    #: SPF mechanisms for the relay's outgoing addresses: by default the domain's MX
    #: (Postern's mail host); with a smarthost, e.g. ["include:_spf.provider.example"].
    spf: tuple[str, ...] = option(("mx",), check=_mechanisms)
    #: Send with the VERP envelope sender ``bounce-<message id>@<domain>`` so bounces find
    #: their message (docs/deliverability.md); false for a smarthost that insists the
    #: envelope sender be the From address (bounces are then matched by Message-ID).
    verp: bool = option(True)
    #: "" picks relay with a smarthost, capture without; "direct" delivers to the MXes.
    mode: str = option("", help='"direct", "relay", "capture"; empty: relay with a smarthost, else capture')
    #: Direct mode: the IP address to send from (one with a PTR record naming ``helo``).
    source_address: str = option("")
    #: Direct mode: DNS server for MX, A and MTA-STS lookups as "host:port"; empty: the system's.
    resolver: str = option("", check=host_port_or_empty)
    #: Direct mode: the MXes' port. Always 25 on the internet; another port is for a lab.
    mx_port: int = option(25)
    #: Direct mode: the HTTPS port of ``mta-sts.<domain>`` policy hosts (443 on the internet).
    mta_sts_port: int = option(443)
    #: Direct mode: minutes between retries of deferred recipients (the last repeats).
    retry_minutes: tuple[int, ...] = option((5, 15, 30, 60, 120, 240))
    #: Direct mode: hours before deferred recipients fail for good (RFC 5321: 4-5 days).
    queue_lifetime_hours: float = option(120.0)
    #: Direct mode: seconds an idle connection to an MX is kept for the next message.
    reuse_seconds: int = option(30)
    #: Direct mode: keep DNS answers for their TTL (false: ask every time, e.g. to watch a
    #: lab zone change).
    dns_cache: bool = option(True)

    def __post_init__(self):
        if self.deadline == 0:
            object.__setattr__(self, "deadline", 4 * self.timeout)
        if self.timeout <= 0 or self.deadline < self.timeout:
            raise ValueError("'timeout' must be positive and 'deadline' (0: 4 x timeout) at least 'timeout'")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together")
        if self.username and not self.starttls:
            raise ValueError("username needs starttls = true: a password is never sent in clear")
        if self.mode not in ("", "direct", "relay", "capture"):
            raise ValueError('mode must be "direct", "relay" or "capture" (empty: relay with a smarthost)')
        if self.mode == "relay" and not self.smarthost:
            raise ValueError('mode "relay" needs a smarthost')
        if self.mode == "direct" and self.smarthost:
            raise ValueError('mode "direct" sends to the MXes: remove smarthost (or use mode "relay")')
        if not self.retry_minutes or any(m <= 0 for m in self.retry_minutes) or self.queue_lifetime_hours <= 0:
            raise ValueError("retry_minutes must be positive numbers and queue_lifetime_hours positive")
        if not self.mode:
            object.__setattr__(self, "mode", "relay" if self.smarthost else "capture")


class SmtpLocalSender(Sender):
    name = "smtp_local"
    description = "local delivery; relay via a smarthost, or capture when none is set"
    options_class = SmtpLocalSendOptions

    def __init__(self, options: SmtpLocalSendOptions | None = None):
        self.options = options or SmtpLocalSendOptions()
        self._direct = None
        self._direct_lock = threading.Lock()  # the outbox's threads share one transport
        if self.options.mode == "direct":
            self.retry_delays = tuple(60 * m for m in self.options.retry_minutes)
            self.queue_lifetime = 3600 * self.options.queue_lifetime_hours

    @property
    def attempt_deadline(self) -> float | None:
        if self.options.mode == "capture":
            return None  # capturing is instant
        if self.options.mode == "direct":
            # The domains of one attempt go in parallel, each within ``deadline``; their DNS
            # and MTA-STS lookups come before it, each bounded by 10 s.
            return self.options.deadline + 30
        return self.options.deadline

    @property
    def delivers_directly(self) -> bool:
        """``/healthz`` and ``postern plugins`` show the outbound mode ``direct``."""
        return self.options.mode == "direct"

    def outbound_route(self) -> str | None:
        if self.options.mode == "direct":
            return "direct delivery to each recipient domain's MX"
        return f"smarthost {self.options.smarthost}" if self.options.mode == "relay" else None

    def spf_mechanisms(self, postern, domain: str) -> list[str]:
        return list(self.options.spf)

    def probe(self, postern, timeout: float) -> list[Finding]:
        """The smarthost greets and takes EHLO (and STARTTLS, its certificate checked as
        a relay would check it); no login, no mail. Without one: a warning that mail to
        outside addresses is kept, never sent."""
        from postern.core.doctor import probes
        from postern.core.doctor.report import warn

        o = self.options
        if o.mode == "direct":
            from postern.plugins.smtp_local.rdns import reverse_dns

            return reverse_dns(o.source_address, o.helo or socket.getfqdn(), o.resolver, min(timeout, o.timeout))
        if not o.smarthost:
            return [
                warn(
                    "send.smtp_local.outbound",
                    "no smarthost: mail to outside addresses is captured (kept with status captured), never sent",
                    "set [send.smtp_local] smarthost to relay it, or choose another [send] backend (acs)",
                    "capture-only",
                )
            ]
        host, _, port = o.smarthost.rpartition(":")
        return [
            probes.smtp(
                "send.smtp_local.smarthost",
                "smarthost",
                host,
                int(port),
                fix="check [send.smtp_local] smarthost, that the relay runs and that this host may reach it",
                timeout=min(timeout, o.timeout),
                starttls=o.starttls,
                ca_file=o.ca_file or None,
                helo=o.helo or None,
            )
        ]

    def dkim_sign(self, postern, sender: str, raw: bytes) -> bytes:
        """Mail it relays leaves DKIM-signed with the tenant's key."""
        from postern.core.signing import sign_as

        return sign_as(postern, sender, raw)

    def send(self, message: OutboundMessage) -> SendResult:
        if self.options.mode == "direct":
            return send_direct(self, message)
        if self.options.mode == "capture":
            return SendResult(self.name, f"captured:{message.postern_id}", "captured")
        return self._relay(message)

    def transport(self):
        """The direct-delivery transport, built once (it keeps the connection pool and
        the MTA-STS policy cache)."""
        with self._direct_lock:
            if self._direct is None:
                self._direct = self._build_transport()
        return self._direct

    def _build_transport(self):
        from postern.plugins.smtp_local.direct import DirectTransport

        o = self.options
        return DirectTransport(
            helo=o.helo or socket.getfqdn(),
            source_address=o.source_address,
            resolver=o.resolver,
            smtp_port=o.mx_port,
            timeout=o.timeout,
            deadline=o.deadline,
            ca_file=o.ca_file,
            mta_sts_https_port=o.mta_sts_port,
            reuse_seconds=o.reuse_seconds,
            dns_cache=o.dns_cache,
        )

    def _relay(self, message: OutboundMessage) -> SendResult:
        o = self.options
        host, _, port = o.smarthost.rpartition(":")
        client = smtplib.SMTP(local_hostname=o.helo or None, timeout=o.timeout)
        # The name STARTTLS checks the certificate against. smtplib records it only when
        # the constructor connects, which would be before the watchdog below is armed.
        client._host = host
        # At the deadline the socket is shut down under the blocked call, which then
        # fails like any broken connection (a temporary failure, retried on schedule).
        fired = threading.Event()
        watchdog = ALARMS.arm(o.deadline, lambda: cut_off(client, fired))
        try:
            with client:
                client.connect(host, int(port))
                if fired.is_set():  # it fired while the socket was not there yet
                    raise TimeoutError("deadline")
                if o.starttls:
                    client.starttls(context=ssl.create_default_context(cafile=o.ca_file or None))
                if o.username:
                    client.login(o.username, o.password)
                refused = client.sendmail(envelope_sender(o, message), list(message.recipients), message.raw)
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are the operator's to fix, not the message's fault: keep
            # retrying (the outbox's schedule) rather than fail every message for good.
            raise TemporaryFailure(f"smarthost {o.smarthost} refused our login: {exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            if all(400 <= code < 500 for code, _ in exc.recipients.values()):
                raise _failure(*next(iter(exc.recipients.values()))) from exc  # all deferred: retry it whole
            outcomes = {address: _outcome(code, text) for address, (code, text) in exc.recipients.items()}
            return SendResult(self.name, None, "sent", recipients=outcomes)
        except smtplib.SMTPResponseException as exc:
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            if fired.is_set():  # the deadline cut the connection
                raise TemporaryFailure(f"smarthost {o.smarthost}: not done within {o.deadline} s") from exc
            raise TemporaryFailure(f"smarthost {o.smarthost}: {exc}") from exc
        finally:
            watchdog.cancel()
        # Some recipients refused, the others took it: each gets its own outcome (resending
        # to those that took it would duplicate it for them).
        outcomes = {address: _outcome(code, text) for address, (code, text) in refused.items()}
        return SendResult(self.name, message.message_id, "sent", recipients=outcomes)


def envelope_sender(options: SmtpLocalSendOptions, message: OutboundMessage) -> str:
    return (message.return_path or message.sender) if options.verp else message.sender


def send_direct(sender: SmtpLocalSender, message: OutboundMessage) -> SendResult:
    """Direct mode: every recipient's outcome from the MXes. The domains beyond what one
    attempt delivers in parallel wait for the next attempt, so an attempt stays within
    its deadline (and the outbox's lease)."""
    from postern.plugins.smtp_local.direct import MAX_DOMAINS_IN_PARALLEL

    domains = list(dict.fromkeys(r.rpartition("@")[2].lower() for r in message.recipients))
    now = set(domains[:MAX_DOMAINS_IN_PARALLEL])
    this_time = [r for r in message.recipients if r.rpartition("@")[2].lower() in now]
    results = sender.transport().deliver(envelope_sender(sender.options, message), this_time, message.raw)
    outcomes = {r: RecipientOutcome(x.status, x.code, x.text) for r, x in results.items()}
    for r in message.recipients:
        if r not in outcomes:
            outcomes[r] = RecipientOutcome("deferred", "next_attempt", "more domains than one attempt delivers")
    sent = [r for r, x in outcomes.items() if x.status == "sent"]
    return SendResult(sender.name, message.message_id if sent else None, "sent", recipients=outcomes)


def _failure(code: int, text) -> Exception:
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    if 400 <= code < 500:
        return TemporaryFailure(f"{code} {text}", code=str(code))
    return PermanentFailure(f"{code} {text}", code=str(code))


def _outcome(code: int, text) -> RecipientOutcome:
    """One recipient's reply: ``code`` the reply code and its RFC 3463 status ("550 5.1.1"),
    ``detail`` the whole reply."""
    from postern.core.mail.bounces import enhanced_status

    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    status = "deferred" if 400 <= code < 500 else "bounced"
    return RecipientOutcome(status, f"{code} {enhanced_status(text)}".strip(), f"{code} {text}"[:500])
