"""The ``acs`` send backend: Azure Communication Services email through Microsoft's
``azure-communication-email`` SDK.

``send`` makes one bounded request (``begin_send`` without polling) and answers
"accepted" with ACS's operation id; the outbox then calls ``check``, which reads the
operation's status, until it is ``Succeeded`` or ``Failed``. The operation id is
derived from Postern's message id, so every attempt for one message names the same
ACS operation: a later attempt first asks ACS whether that operation exists (an
earlier attempt may have timed out after ACS took it) and sends only if it does not.
The SDK's own retries are off: waiting belongs to the outbox, never an API worker.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from postern.core.backends import (
    DnsRecord,
    Finding,
    OutboundMessage,
    PendingSend,
    PermanentFailure,
    Sender,
    SendResult,
    TemporaryFailure,
)
from postern.core.options import parse_options
from postern.plugins.acs import mapping
from postern.plugins.acs.options import AcsOptions

log = logging.getLogger("postern.acs")
HTTP_LOG = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")

#: The REST API version Postern speaks (azure-communication-email 1.1's default).
API_VERSION = "2025-09-01"
#: Namespace of the operation ids derived from Postern message ids.
OPERATIONS = uuid.UUID("6f1d1c1e-59a4-4b8e-9a53-2a8f6c0e7a11")
MISSING_EXTRA = (
    "the acs send backend needs the Azure SDK, which is not installed: pip install 'postern[acs]' "
    "(azure-communication-email)"
)


class AcsSender(Sender):
    name = "acs"
    description = "Azure Communication Services email (azure-communication-email)"
    confirms = True
    options_class = AcsOptions

    def __init__(self, options: AcsOptions, client: Any):
        self.options = options
        self.client = client
        self._timeouts = {"connection_timeout": options.request_timeout, "read_timeout": options.request_timeout}

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> AcsSender:
        # Checked before the SDK is imported: bad options are reported without it.
        parsed = parse_options(AcsOptions, options, f"{cls.role}.{cls.name}")
        try:
            from azure.communication.email import EmailClient
            from azure.core.credentials import AzureKeyCredential
        except ImportError:
            raise ValueError(MISSING_EXTRA) from None
        if not HTTP_LOG.level:  # the SDK logs every request's headers at INFO; keep that opt-in
            HTTP_LOG.setLevel(logging.WARNING)
        transport: dict[str, Any] = {"retry_total": 0}  # the outbox retries, honouring Retry-After
        if parsed.ca_file:
            transport["connection_verify"] = parsed.ca_file
        client = EmailClient(
            parsed.endpoint,
            AzureKeyCredential(parsed.access_key),
            api_version=API_VERSION,
            connection_timeout=parsed.request_timeout,
            read_timeout=parsed.request_timeout,
            **transport,
        )
        return cls(parsed, client)

    def outbound_route(self) -> str | None:
        return f"Azure Communication Services at {self.options.endpoint}"

    def spf_mechanisms(self, postern, domain: str) -> list[str]:
        return list(self.options.spf)

    def probe(self, postern, timeout: float) -> list[Finding]:
        """The endpoint's host resolves and answers HTTPS with a certificate we trust
        (any HTTP status: without a signed request ACS answers 401 or 404). Nothing is
        sent, no credential is used."""
        from postern.core.doctor import probes

        return [
            probes.http(
                "send.acs.endpoint",
                "ACS endpoint",
                f"{self.options.endpoint}/",
                fix="check [send.acs] endpoint (or connection_string), this host's DNS and its outbound HTTPS",
                timeout=min(timeout, self.options.request_timeout),
                verify=self.options.ca_file or True,
                any_answer=True,
            )
        ]

    def dkim_records(self, postern, domain: str) -> list[DnsRecord]:
        """ACS signs with its own keys: CNAMEs to them at every mail domain of the zone,
        in place of Postern's own DKIM key."""
        from postern.core import zones

        customer = zones.customer_of(postern.config.mail.domain, domain)
        names = zones.mail_domains(customer, domain) if customer is not None else [domain]
        return [
            DnsRecord(f"{selector}._domainkey.{name}", "CNAME", target, 3600)
            for name in names
            for selector, target in self.options.dkim.items()
        ]

    def dns_records(self, postern, domain: str) -> list[DnsRecord]:
        """The ownership TXT that ACS shows for each custom domain (``domain_verification``)."""
        from postern.core.names import is_within

        return [
            DnsRecord(name, "TXT", value, 3600)
            for name, value in self.options.domain_verification.items()
            if is_within(name, domain)
        ]

    @staticmethod
    def operation_id(postern_id: str) -> str:
        return str(uuid.uuid5(OPERATIONS, postern_id))

    def send(self, message: OutboundMessage) -> SendResult:
        domain = message.sender.rpartition("@")[2]
        if self.options.sender_mode == "inbox" and not self.options.sender_domain_verified(domain):
            raise PermanentFailure(
                f"ACS: {domain} is not among [send.acs] verified_domains; verify it in ACS and list it, "
                'or use sender_mode = "fixed"',
                code="sender_domain_not_verified",
            )
        operation = self.operation_id(message.postern_id)
        if message.attempt > 1:
            known = self._status(operation)
            if known is not None:
                log.info("ACS operation %s for %s already exists: not sending again", operation, message.postern_id)
                return self._result(operation, known)
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError

        body = mapping.email_body(message, self.options)
        try:
            poller = self.client.begin_send(body, operation_id=operation, polling=False, **self._timeouts)
            answer = poller.result()
        except ResourceExistsError:
            # ACS already has this operation id: a concurrent or earlier attempt took it.
            return SendResult(self.name, operation, "accepted", check_after=self.options.poll_interval)
        except HttpResponseError as exc:
            response = exc.response
            body = response.text() if response is not None else ""
            raise mapping.failure(exc.status_code or 0, response and response.headers, body, "send") from None
        except AzureError as exc:  # no answer: refused, reset, timed out
            raise TemporaryFailure(f"ACS send: {type(exc).__name__}: {exc.message}", code="acs_unreachable") from None
        return self._result(operation, answer or {})

    def check(self, pending: PendingSend) -> SendResult:
        operation = pending.backend_message_id
        try:
            status = self._status(operation)
        except TemporaryFailure:
            self._give_up_after_timeout(pending, "its status could not be read")
            raise
        if status is None:
            raise PermanentFailure(f"ACS knows no operation {operation}", code="acs_operation_unknown")
        result = self._result(operation, status)
        if result.status == "accepted":
            self._give_up_after_timeout(pending, f"it was still {status.get('status')}")
        return result

    def _status(self, operation: str) -> dict | None:
        """The operation's status document, or None when ACS has no such operation."""
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        request = HttpRequest("GET", f"/emails/operations/{quote(operation)}", params={"api-version": API_VERSION})
        try:
            response = self.client.send_request(request, **self._timeouts)
        except AzureError as exc:
            raise TemporaryFailure(f"ACS status: {type(exc).__name__}: {exc.message}", code="acs_unreachable") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            failure = mapping.failure(response.status_code, response.headers, response.text(), "status")
            # The message is already with ACS: a refused status read is never its failure.
            raise TemporaryFailure(str(failure), retry_after=getattr(failure, "retry_after", None), code=failure.code)
        try:
            return response.json()
        except ValueError:
            raise TemporaryFailure("ACS status: the answer is not JSON", code="acs_bad_answer") from None

    def _result(self, operation: str, status: dict) -> SendResult:
        state = str(status.get("status", "")).lower()
        if state == "succeeded":
            return SendResult(self.name, operation, "sent")
        if state in ("failed", "canceled"):
            code, text = mapping.error_of(status)
            raise PermanentFailure(f"ACS operation {operation} {state}: {code}: {text}", code=code or f"acs_{state}")
        return SendResult(self.name, operation, "accepted", check_after=self.options.poll_interval)

    def _give_up_after_timeout(self, pending: PendingSend, why: str) -> None:
        if pending.accepted_at is None:
            return
        waited = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - pending.accepted_at).total_seconds()
        if waited > self.options.timeout:
            raise PermanentFailure(
                f"ACS operation {pending.backend_message_id}: no outcome after {int(waited)}s ({why}); "
                "it may still be delivered",
                code="acs_timeout",
            )
