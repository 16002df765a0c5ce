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
from collections.abc import Mapping
from typing import Any

from postern.core.backends import OutboundMessage, PermanentFailure, Sender, SendResult, TemporaryFailure


class SmtpLocalSender(Sender):
    name = "smtp_local"
    description = "local delivery; relay via a smarthost, or capture when none is set"
    OPTIONS = {
        "smarthost": str,
        "starttls": bool,
        "username": str,
        "password": str,
        "timeout": int,
        "deadline": int,
        "helo": str,
        "ca_file": str,
        "spf": list,
    }
    #: Mail it relays leaves DKIM-signed with the tenant's key (the core signs before ``send``).
    dkim_sign = True

    def __init__(
        self,
        smarthost: str = "",
        starttls: bool = True,
        username: str = "",
        password: str = "",
        timeout: int = 30,
        deadline: int = 0,
        helo: str = "",
        ca_file: str = "",
        spf: list | None = None,
    ):
        self.smarthost, self.starttls, self.username, self.password = smarthost, starttls, username, password
        self.timeout, self.helo = timeout, helo
        #: Seconds one relay attempt may take in all (0: 4 x ``timeout``). ``timeout``
        #: bounds each socket operation only: a relay that answers a byte at a time
        #: would otherwise hold the attempt past the outbox's lease.
        self.deadline = deadline or 4 * timeout
        #: PEM file of the CAs to trust for the smarthost's certificate (a private CA);
        #: empty trusts the system's store. Verification is never switched off.
        self.ca_file = ca_file
        #: SPF mechanisms for the relay's outgoing addresses: by default the domain's MX
        #: (Postern's mail host); with a smarthost, e.g. ["include:_spf.provider.example"].
        self.spf = ["mx"] if spf is None else spf

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SmtpLocalSender:
        for key, value in options.items():
            kind = cls.OPTIONS.get(key)
            if kind is None:
                raise ValueError(f"unknown option '{key}'; known: {', '.join(cls.OPTIONS)}")
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"'{key}' must be a {kind.__name__}")
        sender = cls(**options)
        if sender.timeout <= 0 or sender.deadline < sender.timeout:
            raise ValueError("'timeout' must be positive and 'deadline' (0: 4 x timeout) at least 'timeout'")
        if sender.smarthost:
            host, _, port = sender.smarthost.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"smarthost must be host:port, got '{sender.smarthost}'")
        if not all(isinstance(m, str) and m and " " not in m for m in sender.spf):
            raise ValueError('\'spf\' must be a list of SPF mechanisms such as "mx" or "include:spf.example"')
        if bool(sender.username) != bool(sender.password):
            raise ValueError("username and password go together")
        if sender.username and not sender.starttls:
            raise ValueError("username needs starttls = true: a password is never sent in clear")
        if sender.ca_file:
            try:
                ssl.create_default_context(cafile=sender.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"ca_file '{sender.ca_file}' is not a readable PEM file of certificates: {exc}"
                ) from None
        return sender

    @property
    def attempt_deadline(self) -> float | None:
        return self.deadline if self.smarthost else None  # capturing is instant

    def outbound_route(self) -> str | None:
        return f"smarthost {self.smarthost}" if self.smarthost else None

    def send(self, message: OutboundMessage) -> SendResult:
        if not self.smarthost:
            return SendResult(self.name, f"captured:{message.postern_id}", "captured")
        return self._relay(message)

    def _relay(self, message: OutboundMessage) -> SendResult:
        host, _, port = self.smarthost.rpartition(":")
        client = smtplib.SMTP(local_hostname=self.helo or None, timeout=self.timeout)
        # The name STARTTLS checks the certificate against. smtplib records it only when
        # the constructor connects, which would be before the watchdog below is armed.
        client._host = host
        # At the deadline the socket is shut down under the blocked call, which then
        # fails like any broken connection (a temporary failure, retried on schedule).
        fired = threading.Event()
        watchdog = threading.Timer(self.deadline, _cut, (client, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            with client:
                client.connect(host, int(port))
                if fired.is_set():  # it fired while the socket was not there yet
                    raise TimeoutError("deadline")
                if self.starttls:
                    client.starttls(context=ssl.create_default_context(cafile=self.ca_file or None))
                if self.username:
                    client.login(self.username, self.password)
                refused = client.sendmail(message.sender, list(message.recipients), message.raw)
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are the operator's to fix, not the message's fault: keep
            # retrying (the outbox's schedule) rather than fail every message for good.
            raise TemporaryFailure(f"smarthost {self.smarthost} refused our login: {exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise _classify(exc.recipients) from exc
        except smtplib.SMTPResponseException as exc:
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            if fired.is_set():  # the deadline cut the connection
                raise TemporaryFailure(f"smarthost {self.smarthost}: not done within {self.deadline} s") from exc
            raise TemporaryFailure(f"smarthost {self.smarthost}: {exc}") from exc
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
