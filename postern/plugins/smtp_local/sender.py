"""The ``smtp_local`` send backend: relay through a smarthost, or capture.

Recipients served by this Postern never reach a send backend: the core delivers
them through its ingest path. For the rest, with ``smarthost`` configured the
message is relayed over SMTP (STARTTLS and AUTH optional); without one it is
captured: kept in Postern's store with status ``captured`` and sent nowhere, the
safe default for development.
"""

from __future__ import annotations

import smtplib
import ssl
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
        helo: str = "",
        ca_file: str = "",
        spf: list | None = None,
    ):
        self.smarthost, self.starttls, self.username, self.password = smarthost, starttls, username, password
        self.timeout, self.helo = timeout, helo
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

    def send(self, message: OutboundMessage) -> SendResult:
        if not self.smarthost:
            return SendResult(self.name, f"captured:{message.postern_id}", "captured")
        host, _, port = self.smarthost.rpartition(":")
        try:
            with smtplib.SMTP(host, int(port), local_hostname=self.helo or None, timeout=self.timeout) as client:
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
            raise TemporaryFailure(f"smarthost {self.smarthost}: {exc}") from exc
        if refused:
            # Some recipients took it: resending would duplicate it for them.
            raise PermanentFailure(f"refused by the smarthost for {', '.join(sorted(refused))}", code="partial")
        return SendResult(self.name, message.message_id, "sent")


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
