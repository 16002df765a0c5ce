"""Bounces (RFC 3464) and complaints (RFC 5965) that come back for outbound mail.

Outbound mail leaves with a VERP envelope sender, ``bounce-<message id>@<domain>``
(postern.core.mail.reports), so a bounce names the message it is about. The listener
accepts that address at RCPT only while the outbound message exists, and such mail is
never stored as mail: a report found in it marks the recipients it names (bounced or
complained, the suppression list, the events; postern.core.mail.bounces), anything else
sent there (an auto-reply to the envelope sender) is dropped with a log line.

A report sent to an inbox's own address (some servers answer the From) is taken out
the same way when it names an outbound message of that inbox by Message-ID; a report
about mail Postern never sent is ordinary mail and stored as such.
"""

from __future__ import annotations

import dataclasses
import logging

from postern.core.backends import RecipientOutcome
from postern.core.db import write_transaction
from postern.core.mail import bounces, reports, verptag
from postern.core.models import Message

log = logging.getLogger("postern.reports")

#: What ``ingest.receiving_inbox`` answers at RCPT for a VERP address of ours.
REPORTS = object()


def verp_target(address: str) -> Message | None:
    """The outbound message a ``bounce-<id>@<domain>`` address stands for, if it exists
    and left from that domain."""
    message_id = reports.verp_message_id(address.strip().lower())
    if message_id is None:
        return None
    message = Message.get_or_none((Message.id == message_id) & (Message.direction == "outbound"))
    domain = address.strip().lower().rpartition("@")[2]
    if message is None or message.envelope_from.lower().rpartition("@")[2] != domain:
        return None
    return message


def looks_like_report(headers: list[tuple[str, str]]) -> bool:
    """A cheap gate on the parsed top-level headers: only ``multipart/report`` mail is
    parsed again as a report, so ordinary ingest pays nothing."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.strip().lower().startswith("multipart/report")
    return False


def take(postern, arrival):
    """Take the reports out of an arrival: returns (reply, rest) where ``reply`` is the
    SMTP answer when nothing is left to store, and ``rest`` the arrival without the
    recipients whose mail was a report (None when none remain)."""
    verp = [r for r in arrival.recipients if arrival.inboxes.get(r.strip().lower()) is REPORTS]
    inbox_rcpts = [r for r in arrival.recipients if r not in verp]
    report = None
    if verp or looks_like_report(arrival.parsed.headers):
        report = reports.parse_report(arrival.raw)
    consumed = set(verp)
    for address in verp:
        message = verp_target(address)
        if message is not None and report is not None:
            apply(postern, message, _for_tag(message, report, address), suppress=True)
        elif message is not None:
            log.info("dropped mail to the bounce address of %s: not a bounce or complaint report", message.id)
    if report is not None and inbox_rcpts and not verp:
        message = _by_message_id(report, [arrival.inboxes[r.strip().lower()] for r in inbox_rcpts])
        if message is not None:
            # A Message-ID reaches every recipient, forward and archive: such a report
            # marks the recipient and tells the webhooks, but suppresses no one.
            apply(postern, message, report, suppress=False)
            consumed.update(r for r in inbox_rcpts if arrival.inboxes[r.strip().lower()].id == message.inbox_id)
    if not consumed:
        return None, arrival
    rest = [r for r in arrival.recipients if r not in consumed]
    if not rest:
        return "250 2.0.0 OK report received", None
    inboxes = {k: v for k, v in arrival.inboxes.items() if v is not REPORTS}
    return None, dataclasses.replace(arrival, recipients=rest, inboxes=inboxes)


def _for_tag(message: Message, report, address: str):
    """The part of ``report`` the VERP address may speak for: with a recipient tag (a
    copy sent to one recipient), that recipient only; untagged, any recipient of the
    message, except bulk mail, whose copies are always tagged (an untagged report about
    it is a forgery)."""
    parts = reports.verp_parts(address.strip().lower())
    tag = parts[1] if parts else ""
    if not tag and not message.bulk:
        return report
    named = tuple(r for r in report.recipients if tag and verptag.names(message.id, r.recipient, tag))
    if len(named) != len(report.recipients):
        log.warning("report to %s names recipients its address was not made for: ignored for them", address)
    return dataclasses.replace(report, recipients=named)


def _by_message_id(report, inboxes) -> Message | None:
    if not report.original_message_id:
        return None
    ids = [i.id for i in inboxes if i is not None]
    return (
        Message.select()
        .where(
            (Message.message_id_header == report.original_message_id)
            & (Message.direction == "outbound")
            & (Message.inbox.in_(ids))
        )
        .first()
    )


#: ARF feedback types that are a recipient's complaint; ``not-spam`` and
#: ``auth-failure`` (RFC 6591) say nothing against mailing the address.
COMPLAINTS = ("abuse", "fraud", "virus", "other", "")


def _is_complaint(report) -> bool:
    """A complaint names exactly one recipient: a report that could only guess it from
    the embedded message's To (several addresses) cannot say who complained."""
    return report.feedback_type.lower() in COMPLAINTS and len(report.recipients) == 1


def apply(postern, message: Message, report, *, suppress: bool) -> None:
    """Mark what the report says about the message's recipients (only recipients of the
    message: a report naming anyone else changes nothing); ``suppress``: also add them
    to the suppression list (reports to the VERP address only)."""
    with write_transaction():
        if report.kind == "complaint":
            if _is_complaint(report):
                named = {report.recipients[0].recipient: report.feedback_type or "abuse"}
                bounces.complained(postern, message, named, suppress=suppress)
        else:
            failed = {
                r.recipient: RecipientOutcome("bounced", r.status, r.diagnostic)
                for r in report.recipients
                if r.action == "failed"
            }
            bounces.bounced(postern, message, failed, "report", suppress=suppress)
    log.info("report (%s) for %s: %d recipient(s)", report.kind, message.id, len(report.recipients))
