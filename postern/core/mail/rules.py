"""Allow and block lists (docs/trust.md, "Allow and block lists").

An entry is an address (``a@example.org``) or a domain (``example.org``, which covers its
subdomains too), for one direction:

- ``receive``: an allow entry is matched on the sender's *authenticated* identity only
  (``identity_of``): the ``From:`` address when SPF or DKIM aligned with its domain,
  else the envelope sender when SPF passed for it; a forged ``From:`` never gets past an
  allowlist. A block entry is matched on that identity and on what the message claims
  (its ``From:`` and envelope sender): a claim can only get mail refused.
- ``send``: matched on each recipient of an agent's send (to, cc and bcc).

Entries apply from every level above an inbox together: its customer's, its enrollment
key's and its own. A block anywhere wins. Where any allow entry applies, only what one
of them matches is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.core import fastsql
from postern.core.errors import InvalidInput, PermissionDenied
from postern.core.models import MailRule
from postern.core.names import InvalidName, normalise_domain

DIRECTIONS = ("receive", "send")
RULE_ACTIONS = ("allow", "block")


def normalise_pattern(value) -> str:
    """An entry as stored: lower case, an address or a domain; else ``InvalidInput``."""
    if not isinstance(value, str) or not value.strip() or len(value) > 320:
        raise InvalidInput("pattern must be an address (a@example.org) or a domain (example.org)", field="pattern")
    local, at, domain = value.strip().lower().rpartition("@")
    try:
        domain = normalise_domain(domain)
    except InvalidName as exc:
        raise InvalidInput(f"pattern: {exc}", field="pattern") from None
    if at and (not local or any(c.isspace() or c in '<>"' for c in local)):
        raise InvalidInput(f"pattern: '{value[:80]}' is not an address", field="pattern")
    return f"{local}@{domain}" if at else domain


def matches(pattern: str, address: str) -> bool:
    address = address.strip().lower()
    if "@" in pattern:
        return address == pattern
    domain = address.rpartition("@")[2]
    return domain == pattern or domain.endswith("." + pattern)


_RULE_FIELDS = fastsql.all_fields(MailRule)
# Hand-written (postern/core/fastsql.py): ingest asks this for every recipient of every
# message, and peewee building the statement was ~7% of an SMTP session's CPU.
_APPLYING = (
    "WHERE customer_id = ? AND direction = ? AND ((enrollment_id IS NULL AND inbox_id IS NULL)"
    " OR (enrollment_id = ? AND inbox_id IS NULL) OR inbox_id = ?)"
)


def applying(customer_id: str, enrollment_id: str, inbox_id: str, direction: str) -> list[MailRule]:
    """The entries of one direction that apply to an inbox: its customer's, its
    enrollment key's and its own."""
    return fastsql.select(MailRule, _RULE_FIELDS, _APPLYING, (customer_id, direction, enrollment_id, inbox_id))


@dataclass(frozen=True)
class Listed:
    """What the entries say of one identity."""

    blocked: bool = False
    #: An allow entry matched it.
    allowed: bool = False
    #: Some allow entry applies: what none of them matches is not allowed.
    allowlist: bool = False

    @property
    def not_allowed(self) -> bool:
        return self.allowlist and not self.allowed


def judge(rules: list[MailRule], identity: str | None, claims=()) -> Listed:
    """``identity``: the proven sender, the only thing an allow entry meets. ``claims``:
    what the message merely says it is from (From, envelope); a block entry meets those
    too, since a claim can only get mail refused, never let in: a sender on a blocklist
    cannot slip past it by not authenticating."""
    allows = [r for r in rules if r.action == "allow"]
    candidates = {a.lower() for a in (identity, *claims) if a}
    return Listed(
        blocked=any(r.action == "block" and matches(r.pattern, a) for r in rules for a in candidates),
        allowed=identity is not None and any(matches(r.pattern, identity) for r in allows),
        allowlist=bool(allows),
    )


def identity_of(verdict, from_address: str, mail_from: str) -> str | None:
    """The sender as proven: the aligned ``From:`` address, else the SPF-passed
    envelope sender, else None."""
    if verdict.aligned and "@" in from_address:
        return from_address.lower()
    if verdict.spf == "pass" and "@" in mail_from:
        return mail_from.lower()
    return None


def check_recipients(inbox, recipients: list[str]) -> None:
    """Refuse a send from ``inbox`` to a blocked recipient, or to one outside the
    allowlist (403 ``recipient_blocked`` / ``recipient_not_allowed``, naming it)."""
    rules = applying(inbox.customer_id, inbox.enrollment_id, inbox.id, "send")
    if not rules:
        return
    for address in recipients:
        listed = judge(rules, address)
        if listed.blocked:
            raise PermissionDenied(f"sending to {address} is blocked for this inbox", code="recipient_blocked")
        if listed.not_allowed:
            raise PermissionDenied(
                f"{address} is not on this inbox's recipient allowlist", code="recipient_not_allowed"
            )


def check_local_recipients(sender: str, recipients: list[str]) -> None:
    """Mail from one of Postern's inboxes to another is never screened by a listener, and
    its sender is known for certain: refuse the send (403 ``recipient_refuses_sender``,
    naming the recipient) when the recipient inbox's receive entries block the sending
    address or allow others only."""
    from postern.core.mail.ingest import local_inbox

    for address in recipients:
        inbox = local_inbox(address)
        if inbox is None:
            continue
        listed = judge(applying(inbox.customer_id, inbox.enrollment_id, inbox.id, "receive"), sender)
        if listed.blocked or listed.not_allowed:
            raise PermissionDenied(f"{address} does not accept mail from {sender}", code="recipient_refuses_sender")
