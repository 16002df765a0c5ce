"""The ``smtp_local`` send backend: relay through a smarthost, or capture.

Recipients served by this Postern never reach a send backend: the core delivers
them through its ingest path. For the rest, with ``smarthost`` configured the
message is relayed over SMTP (STARTTLS and AUTH optional); without one it is
captured: kept in Postern's store with status ``captured`` and sent nowhere, the
safe default for development.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass

from postern.core.backends import Finding, OutboundMessage, PermanentFailure, Sender, SendResult, TemporaryFailure
from postern.core.options import host_port_or_empty, option


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

    def __post_init__(self):
        if self.deadline == 0:
            object.__setattr__(self, "deadline", 4 * self.timeout)
        if self.timeout <= 0 or self.deadline < self.timeout:
            raise ValueError("'timeout' must be positive and 'deadline' (0: 4 x timeout) at least 'timeout'")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together")
        if self.username and not self.starttls:
            raise ValueError("username needs starttls = true: a password is never sent in clear")


class SmtpLocalSender(Sender):
    name = "smtp_local"
    description = "local delivery; relay via a smarthost, or capture when none is set"
    options_class = SmtpLocalSendOptions

    def __init__(self, options: SmtpLocalSendOptions | None = None):
        self.options = options or SmtpLocalSendOptions()

    @property
    def attempt_deadline(self) -> float | None:
        return self.options.deadline if self.options.smarthost else None  # capturing is instant

    def outbound_route(self) -> str | None:
        return f"smarthost {self.options.smarthost}" if self.options.smarthost else None

    def spf_mechanisms(self, postern, domain: str) -> list[str]:
        return list(self.options.spf)

    def probe(self, postern, timeout: float) -> list[Finding]:
        """The smarthost greets and takes EHLO (and STARTTLS, its certificate checked as
        a relay would check it); no login, no mail. Without one: a warning that mail to
        outside addresses is kept, never sent."""
        from postern.core.doctor import probes
        from postern.core.doctor.report import warn

        o = self.options
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
        if not self.options.smarthost:
            return SendResult(self.name, f"captured:{message.postern_id}", "captured")
        return self._relay(message)

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
        watchdog = threading.Timer(o.deadline, _cut, (client, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            with client:
                client.connect(host, int(port))
                if fired.is_set():  # it fired while the socket was not there yet
                    raise TimeoutError("deadline")
                if o.starttls:
                    client.starttls(context=ssl.create_default_context(cafile=o.ca_file or None))
                if o.username:
                    client.login(o.username, o.password)
                refused = client.sendmail(message.sender, list(message.recipients), message.raw)
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are the operator's to fix, not the message's fault: keep
            # retrying (the outbox's schedule) rather than fail every message for good.
            raise TemporaryFailure(f"smarthost {o.smarthost} refused our login: {exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise _classify(exc.recipients) from exc
        except smtplib.SMTPResponseException as exc:
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            if fired.is_set():  # the deadline cut the connection
                raise TemporaryFailure(f"smarthost {o.smarthost}: not done within {o.deadline} s") from exc
            raise TemporaryFailure(f"smarthost {o.smarthost}: {exc}") from exc
        finally:
            watchdog.cancel()
        if refused:
            # Some recipients took it: resending would duplicate it for them.
            raise PermanentFailure(f"refused by the smarthost for {', '.join(sorted(refused))}", code="partial")
        return SendResult(self.name, message.message_id, "sent")


def _cut(client: smtplib.SMTP, fired: threading.Event) -> None:
    fired.set()  # before the cut, so the failure it causes is read as the deadline's
    sock = client.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _failure(code: int, text) -> Exception:
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    if 400 <= code < 500:
        return TemporaryFailure(f"{code} {text}", code=str(code))
    return PermanentFailure(f"{code} {text}", code=str(code))


def _classify(recipients: dict) -> Exception:
    codes = [code for code, _ in recipients.values()]
    first_code, first_text = next(iter(recipients.values()))
    if all(400 <= c < 500 for c in codes):
        return _failure(first_code, first_text)
    return PermanentFailure(f"recipients refused: {', '.join(sorted(recipients))}", code=str(first_code))
