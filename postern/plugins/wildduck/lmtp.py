"""Handing a message to WildDuck over LMTP, its real delivery path, with a memory of
which recipients were reached.

LMTP answers once per recipient, so one transaction can reach some recipients and not
others. A message is then retried (by the sender through the SMTP front door, or by
Postern's outbox for an agent's local mail), and the recipients reached the first time
must not get it twice: each reached recipient is recorded against the SHA-256 of the
exact bytes delivered, and a retry of the same bytes skips them. For agent mail the
record is made before the hand-over too, so even a process that died between WildDuck's
answer and the record does not deliver twice (``deliver_once``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import smtplib

from postern.core.db import write_transaction
from postern.core.models import utcnow
from postern.plugins.wildduck.models import WildDuckDelivered

log = logging.getLogger("postern.wildduck.lmtp")

#: How long a reached recipient is remembered: longer than any sender keeps retrying
#: (RFC 5321 suggests giving up after 4-5 days).
REMEMBER = dt.timedelta(days=7)

UNAVAILABLE = (451, "4.4.1 Mailbox store unavailable, try again later")


def deliver_lmtp(
    host: str, port: int, sender: str, recipients: list[str], raw: bytes, timeout: float = 30
) -> dict[str, tuple[int, str]]:
    """One LMTP transaction; returns each recipient's reply (code, text). A recipient
    refused at RCPT keeps that reply; the others get their DATA reply. If WildDuck is
    down or the connection drops, every recipient without a reply yet gets a 451."""
    replies: dict[str, tuple[int, str]] = {}
    try:
        with smtplib.LMTP(host, port, timeout=timeout) as lmtp:
            lmtp.ehlo_or_helo_if_needed()
            code, msg = lmtp.mail(sender)
            if code != 250:
                return {rcpt: (code, _text(msg)) for rcpt in recipients}
            accepted = []
            for rcpt in recipients:
                code, msg = lmtp.rcpt(rcpt)
                if code in (250, 251):
                    accepted.append(rcpt)
                else:
                    replies[rcpt] = (code, _text(msg))
            if not accepted:
                return replies
            code, msg = lmtp.data(raw)
            replies[accepted[0]] = (code, _text(msg))
            for rcpt in accepted[1:]:
                code, msg = lmtp.getreply()
                replies[rcpt] = (code, _text(msg))
    except (OSError, smtplib.SMTPException) as exc:
        # Down, refused, timed out, dropped: whoever has no reply is not known delivered.
        log.info("LMTP to %s:%s failed: %s", host, port, exc)
    return {rcpt: replies.get(rcpt, UNAVAILABLE) for rcpt in recipients}


def deliver_once(receiver, sender: str, recipients: list[str], raw: bytes, *, landed=None, digest=None) -> dict:
    """Deliver ``raw`` to the ``recipients`` not already reached with these bytes;
    returns the replies of those not reached now (empty: everyone has it).

    Without ``landed`` (the SMTP front door, where the sender keeps the message and
    retries), reached recipients are recorded only when some were not (the retry must
    skip them). With ``landed`` (agent mail, retried by Postern's outbox), each recipient
    is recorded as attempted before the hand-over and as delivered after it; a recipient
    found attempted but not delivered (the process died in between) is first looked for
    with ``landed(recipient)`` and not delivered again if it is there."""
    digest = digest or hashlib.sha256(raw).hexdigest()  # a caller that changes raw names the original
    known = _known(digest, recipients)
    todo = [r for r in recipients if not known.get(r)]
    if landed is not None:
        unsure = [r for r in todo if r in known]
        there = [r for r in unsure if landed(r)]
        if there:
            _record(digest, there, delivered=True)
        todo = [r for r in todo if r not in there]
        if todo:
            _record(digest, todo, delivered=False)
    if not todo:
        return {}
    options = receiver.options
    replies = deliver_lmtp(options.lmtp_host, options.lmtp_port, sender, todo, raw, options.timeout_seconds)
    reached = [r for r in todo if replies[r][0] == 250]
    failed = {r: reply for r, reply in replies.items() if reply[0] != 250}
    if reached and (landed is not None or failed):
        _record(digest, reached, delivered=True)
    answered = [r for r, reply in failed.items() if reply is not UNAVAILABLE]  # not a lost answer
    if answered and landed is not None:
        _forget(digest, answered)  # WildDuck said no: known not delivered
    return failed


def _known(digest: str, recipients: list[str]) -> dict[str, bool]:
    """Recipient -> delivered, for those with a record for these bytes."""
    query = WildDuckDelivered.select(WildDuckDelivered.recipient, WildDuckDelivered.delivered).where(
        (WildDuckDelivered.digest == digest) & (WildDuckDelivered.recipient.in_(recipients))
    )
    return {row.recipient: row.delivered for row in query}


def _record(digest: str, recipients: list[str], *, delivered: bool) -> None:
    now = utcnow()
    with write_transaction():
        for rcpt in recipients:
            WildDuckDelivered.insert(digest=digest, recipient=rcpt, attempted_at=now, delivered=delivered).on_conflict(
                conflict_target=[WildDuckDelivered.digest, WildDuckDelivered.recipient],
                update={WildDuckDelivered.delivered: delivered},
            ).execute()
        WildDuckDelivered.delete().where(WildDuckDelivered.attempted_at < now - REMEMBER).execute()


def _forget(digest: str, recipients: list[str]) -> None:
    with write_transaction():
        WildDuckDelivered.delete().where(
            (WildDuckDelivered.digest == digest) & (WildDuckDelivered.recipient.in_(recipients))
        ).execute()


def _text(msg: bytes) -> str:
    return msg.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")[:200]
