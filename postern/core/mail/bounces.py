"""Recipients that bounced or complained: the row, the suppression list, the event.

One path for every way a recipient is refused for good: a remote server's 5xx during
direct delivery, a relay refusing one recipient, and a bounce (RFC 3464) or complaint
(RFC 5965) report that comes back later (postern.core.mail.reportintake). Each marks
the recipient's row, adds the address to the customer's suppression list when the
failure says the address itself is bad, and queues ``message.bounced`` or
``message.complained``. Call inside the caller's write transaction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from postern.core import suppression
from postern.core.backends import RecipientOutcome
from postern.core.mail import recipients
from postern.core.models import Message
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.outbound")

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
#: Codes of direct delivery that say the address's domain takes no mail at all.
_DEAD_DOMAIN = ("null_mx", "nxdomain", "no_mx")


def enhanced_status(code: str) -> str:
    """The RFC 3463 status in a reply ("550 5.1.1 …" → "5.1.1"), or ""."""
    found = _ENHANCED.search(code or "")
    return ".".join(found.groups()) if found else ""


def suppressible(code: str) -> bool:
    """Whether a permanent failure says the *address* is bad, so mail to it must stop:
    a 5.x.x status (never 4.x.x, which is temporary), except 5.7.x, which refuses the
    sender or its content (policy, authentication, spam) and says nothing about the
    address. A reply without a status counts when its code is about the mailbox (550,
    551, 553); a domain that takes no mail (null MX, no such domain) counts too."""
    if code in _DEAD_DOMAIN:
        return True
    status = enhanced_status(code)
    if status:
        return status.startswith("5.") and not status.startswith("5.7.")
    return bool(re.match(r"55[013]\b", code or ""))  # no such mailbox, not local, bad name


def bounced(
    postern, message: Message, refused: Mapping[str, RecipientOutcome], source: str, *, suppress: bool = True
) -> None:
    """Record recipients refused for good; ``source`` says how we know ("delivery",
    "report"). ``suppress`` False: mark and tell, but leave the suppression list alone
    (a report whose origin proves nothing)."""
    refused = {
        a: o for a, o in refused.items() if recipients.mark_report(message.id, a.lower(), "bounced", o.code, o.detail)
    }
    if not refused:
        return
    for address, outcome in refused.items():
        if suppress and suppressible(outcome.code):
            suppression.suppress(
                message.customer_id, address, "bounce", f"{outcome.code} {outcome.detail}".strip(), message.id
            )
        log.warning("message %s bounced for %s (%s): %s", message.id, address, source, outcome.code)
    _event(postern, "message.bounced", message, refused, source)


def complained(
    postern, message: Message, addresses: Mapping[str, str], source: str = "report", *, suppress: bool = True
) -> None:
    """Recipients who reported the message as abuse (``addresses``: address → feedback type)."""
    if not addresses:
        return
    outcomes = {a: RecipientOutcome("complained", f"arf:{kind}"[:60], "") for a, kind in addresses.items()}
    outcomes = {
        a: o for a, o in outcomes.items() if recipients.mark_report(message.id, a.lower(), "complained", o.code, "")
    }
    if not outcomes:
        return
    for address, outcome in outcomes.items():
        if suppress:
            suppression.suppress(message.customer_id, address, "complaint", outcome.code, message.id)
        log.warning("message %s: complaint from %s (%s)", message.id, address, outcome.code)
    _event(postern, "message.complained", message, outcomes, source)


def _event(postern, event_type: str, message: Message, outcomes: Mapping[str, RecipientOutcome], source: str) -> None:
    listed = [{"address": a, "code": o.code or None, "detail": o.detail or None} for a, o in outcomes.items()]
    webhook_events.message_event(postern, event_type, [message], {"recipients": listed, "source": source})
