"""Backend interfaces: one small base class per role, typed results, typed failures.

A plugin subclasses one of these, sets ``name``, and registers the class through
``postern_register_backends``. The core builds it with ``from_config(options)``,
where ``options`` is the ``[<role>.<name>]`` table of the config. A backend with
options declares them as a frozen dataclass in ``options_class`` (see
``postern.core.options``): ``from_config`` then checks the table and calls
``cls(parsed_options)``. Heavy or optional imports belong inside ``from_config`` so an
uninstalled extra fails only when chosen.

What a backend needs besides its role's work (services to run, DNS records to
publish, SPF and DKIM for the mail it sends, a look at each sent message) it declares
with the optional methods below. The core calls them on the *active* backend of each
role only (``Postern.active(role)``), so a backend never asks "am I the one chosen?";
global hooks (``postern.core.hookspecs``) stay for what any plugin may add.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

# Re-exported: backends raise these, and plugins import them from here.
from postern.core.doctor.report import Finding  # noqa: F401  (what ``probe`` returns)
from postern.core.errors import BackendError, PermanentFailure, TemporaryFailure  # noqa: F401
from postern.core.options import parse_options

if TYPE_CHECKING:
    from postern.core.services import Service

ROLES = ("send", "receive", "dns", "billing")


class Backend:
    """Common shape of every backend: a ``name`` and ``from_config``."""

    name: ClassVar[str] = ""
    role: ClassVar[str] = ""
    #: Shown by ``postern plugins``; one line.
    description: ClassVar[str] = ""
    #: The frozen dataclass of this backend's options (fields made with
    #: ``postern.core.options.option``), or None for a backend that takes none.
    options_class: ClassVar[type | None] = None

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Backend:
        """Build the backend from its config table: with an ``options_class``,
        ``cls(parse_options(options_class, options, "role.name"))``.

        Raise ``ValueError`` for a bad or unknown option; the core reports it at
        start-up naming the ``[role.name]`` table.
        """
        if cls.options_class is not None:
            return cls(parse_options(cls.options_class, options, f"{cls.role}.{cls.name}"))
        if options:
            raise ValueError(f"{cls.role} backend '{cls.name}' takes no options, got: {', '.join(sorted(options))}")
        return cls()

    # Optional: called by the core on the active backend of each role only.

    def services(self, postern) -> list[Service]:
        """Long-running services this backend needs ``postern serve`` to supervise (a
        listener, a watcher), as ``postern.core.services.Service``; none by default."""
        return []

    def dns_records(self, postern, domain: str) -> list[DnsRecord]:
        """Extra records for the zone at ``domain`` (its apex) that this backend needs
        (a vendor's ownership TXT, an MX in front of it); none by default. Records
        outside the zone are dropped with a warning."""
        return []

    def message_sent(self, postern, message, result: SendResult | None) -> None:
        """An outbound message was sent (``result`` None when every recipient was an
        inbox of this Postern). Called after the commit; an exception is logged and
        ignored, the message stays sent."""

    def listens(self) -> list[Listen]:
        """The addresses this backend's services listen on; none by default. ``postern
        doctor`` checks that each is free or held by this Postern, and the certificate of
        each that offers TLS."""
        return []

    def probe(self, postern, timeout: float) -> list[Finding]:
        """Whether what this backend depends on can be reached (its API, its relay, its
        store), each answer a ``Finding`` (``postern.core.doctor.probes`` builds them),
        each network wait bounded by ``timeout`` seconds; nothing by default. Never sends
        mail or changes anything. ``postern doctor`` shows every finding; ``/healthz``
        calls it at most every few seconds and reports the backend unreachable, and
        itself ``degraded``, on any FAIL. An exception counts as a FAIL."""
        return []


@dataclass(frozen=True)
class Listen:
    """An address a backend's service listens on: what listens, ``host:port``, UDP as
    well as TCP, and the PEM certificate and key it offers over TLS (empty: none)."""

    name: str
    address: str
    udp: bool = False
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    """A message ready to leave: the envelope, the MIME bytes the core built, and the
    same content structured, for backends that take fields rather than MIME (ACS)."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    postern_id: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    from_name: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    attachments: tuple = ()  # of OutboundAttachment
    #: Display names of the To, Cc and Reply-To addresses that have one.
    names: Mapping[str, str] = field(default_factory=dict)
    #: The envelope sender a backend that controls the envelope should use: a VERP
    #: address (``bounce-<message id>@<domain>``) so a bounce finds its message. Empty:
    #: use ``sender``. Backends whose service sets its own envelope (ACS) ignore it.
    return_path: str = ""
    #: 1 for the first hand-over. A later attempt may follow one whose outcome is unknown
    #: (a timeout after the request left), so a backend with its own idempotency should
    #: look the earlier attempt up before sending again.
    attempt: int = 1


@dataclass(frozen=True)
class OutboundAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class RecipientOutcome:
    """What became of one recipient: ``sent``, ``deferred`` (temporary: the core retries
    it on the backend's schedule) or ``bounced`` (refused for good). ``code`` is the reply
    or status that decided it ("550 5.1.1", "null_mx"), ``detail`` the words with it."""

    status: str
    code: str = ""
    detail: str = ""


@dataclass(frozen=True)
class SendResult:
    """What a send backend did with a message."""

    backend: str
    backend_message_id: str | None
    status: str  # "sent" (handed over for good), "accepted" (backend still working) or "captured" (kept locally)
    #: With "accepted" from a backend that ``confirms``: seconds before the core calls ``check``.
    check_after: float | None = None
    #: Per recipient, for a backend that can tell them apart (direct delivery, a relay
    #: refusing some): any recipient missing from it shares ``status``. A message with
    #: deferred recipients stays queued for them only.
    recipients: Mapping[str, RecipientOutcome] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingSend:
    """An outbound message its send backend accepted and is still working on."""

    postern_id: str
    backend_message_id: str
    #: When the backend accepted it (naive UTC), for the backend's own overall timeout.
    accepted_at: dt.datetime


class Sender(Backend):
    """Role ``send``: hands outbound messages to a transport."""

    role = "send"
    #: True when ``send`` may answer "accepted" for work the backend finishes later: the
    #: message is then ``sending`` and the outbox calls ``check`` until the outcome is known.
    #: A backend that leaves it False has an "accepted" recorded as ``sent``.
    confirms: ClassVar[bool] = False
    #: The longest one ``send`` call may take, in seconds, or None when the backend does
    #: not bound it. The core refuses a ``mail.outbound_lease_seconds`` that is not above
    #: it: the outbox may start a new attempt once the lease lapses, so an attempt that
    #: outlived its lease could hand the same message over twice.
    attempt_deadline: float | None = None
    #: Seconds between retries of deferred mail (the last repeats), and how long a
    #: message may stay queued before its deferred recipients fail; None: the core's
    #: short schedule (``postern.core.mail.delivery.RETRY_SCHEDULE``, 8 attempts), meant
    #: for a relay or service that does its own long retries.
    retry_delays: tuple[int, ...] | None = None
    queue_lifetime: float | None = None

    def outbound_route(self) -> str | None:
        """Where mail to outside addresses goes, in words for an operator (a host, an
        endpoint), or None when it goes nowhere: kept as ``captured``. Shown by
        ``postern plugins`` and, as a mode, by ``/healthz``."""
        return f"the {self.name} send backend"

    def send(self, message: OutboundMessage) -> SendResult:
        """Send ``message``; raise ``TemporaryFailure`` or ``PermanentFailure``."""
        raise NotImplementedError

    def check(self, pending: PendingSend) -> SendResult:
        """Only for ``confirms``: the outcome of an accepted send. Return "sent" when done,
        "accepted" (with ``check_after``) while still running; raise ``PermanentFailure``
        when it failed and ``TemporaryFailure`` when the outcome cannot be read now."""
        raise NotImplementedError

    def spf_mechanisms(self, postern, domain: str) -> list[str]:
        """The SPF mechanisms mail from ``domain`` needs when this backend sends it, such
        as ``"mx"`` or ``"include:spf.protection.outlook.com"``; the core publishes
        ``v=spf1 <these> -all`` (none: ``v=spf1 -all``, nothing may send)."""
        return []

    def dkim_records(self, postern, domain: str) -> list[DnsRecord] | None:
        """The DKIM records to publish for tenant zone ``domain`` when this backend signs
        with keys of its own (CNAMEs to a vendor's keys, say); None (the default) lets
        Postern generate and publish its own key, used by ``dkim_sign``."""
        return None

    def dkim_sign(self, postern, sender: str, raw: bytes) -> bytes:
        """The MIME bytes to hand to ``send``: ``raw`` unchanged by default. A backend
        that relays mail as is to the internet returns
        ``postern.core.signing.sign_as(postern, sender, raw)``: signed with the key of
        ``sender``'s tenant domain. ``DkimKeyUnavailable`` queues the message for retry."""
        return raw


@dataclass(frozen=True)
class InboxRef:
    """The identity of an inbox as a receive backend needs it."""

    inbox_id: str
    customer_id: str
    address: str


class Receiver(Backend):
    """Role ``receive``: where inbound mail for an inbox arrives and is kept."""

    role = "receive"

    def provision(self, inbox: InboxRef) -> None:
        """Make ``inbox.address`` receivable; idempotent."""
        raise NotImplementedError

    def deprovision(self, inbox: InboxRef) -> None:
        """Stop receiving for ``inbox.address``; idempotent."""
        raise NotImplementedError

    def deliver_local(self, postern, message, recipients: list[str]) -> bool:
        """An agent's outbound ``message`` is addressed to ``recipients``, inboxes of this
        Postern. Return False to let the core store it straight through its ingest (the
        default); a backend that keeps its own mailboxes delivers it there instead, marks
        ``message.local_done`` once every recipient has it, and returns True. Raise
        ``TemporaryFailure`` to have the outbox retry, ``PermanentFailure`` to fail it."""
        return False


@dataclass(frozen=True)
class DnsRecord:
    """One resource record: owner name (absolute, no trailing dot), type, TTL, value."""

    name: str
    rtype: str
    value: str
    ttl: int = 300


class DnsProvider(Backend):
    """Role ``dns``: publishes each tenant zone's records."""

    role = "dns"

    def zone_changed(self, zone: str) -> None:
        """The records of ``zone`` changed in the database; republish or drop caches."""
        raise NotImplementedError


@dataclass(frozen=True)
class QuotaDecision:
    """Answer of a billing backend or quota hook. A refusal becomes a 402 whose error
    ``code`` is ``code`` (default ``payment_required``) and which carries ``headers``
    (x402's ``PAYMENT-REQUIRED`` offer): ``postern.core.quota.refusal``."""

    allowed: bool
    reason: str = ""
    retry_after: float | None = None
    code: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class BillingBackend(Backend):
    """Role ``billing``: decides whether a customer may use a metered action."""

    role = "billing"

    def check(self, customer_id: str, action: str, quantity: int = 1, info=None) -> QuotaDecision:
        """Return whether ``customer_id`` may perform ``action`` ``quantity`` times.
        ``info`` is the request's ``RequestInfo`` (None outside a request): a backend
        that takes payments reads ``info.payment`` and may set ``info.payment_response``.
        Backends written before ``info`` existed may leave it out of their signature."""
        raise NotImplementedError

    def record(self, customer_id: str, action: str, quantity: int = 1) -> None:
        """Record usage after the action succeeded."""
        raise NotImplementedError

    def action_failed(self, info) -> None:
        """The action ``check`` allowed for the request of ``info`` failed: release what
        the check took (a settled payment, so a retry reuses it). Called by the API only
        for a request whose ``info.billing`` names a ``payment_key``."""


BASE_CLASSES: dict[str, type[Backend]] = {
    "send": Sender,
    "receive": Receiver,
    "dns": DnsProvider,
    "billing": BillingBackend,
}
