"""Postern's SMTP listener in front of WildDuck: RCPT is checked against the core as
with smtp_local, and DATA is parsed within Postern's limits, then handed to WildDuck
over LMTP (its real delivery path) before the ``250``. Nothing is stored here: the
watcher ingests what WildDuck holds, so there is one ingest path and no duplicate. The
sender verdict made here travels with the message: its Authentication-Results names a
``WildDuckVerdict`` row, which the watcher stores with the message.

SMTP has one reply to DATA, LMTP one per recipient. When WildDuck takes the message
for some recipients and not others, the sender gets a ``451`` and retries: the
recipients already reached are remembered (postern.plugins.wildduck.lmtp) and the
retry goes to the others only.
"""

from __future__ import annotations

import functools
import hashlib
import logging

from postern.core.db import write_transaction
from postern.core.ids import new_id
from postern.core.mail.verdicts import single_from
from postern.core.models import QuarantinedMessage
from postern.core.quarantine import hold
from postern.core.smtp.listener import run_listener
from postern.core.smtp.screening import TEMPORARY, screen
from postern.core.smtp.session import Arrival
from postern.plugins.wildduck.lmtp import deliver_once
from postern.plugins.wildduck.models import WildDuckVerdict

log = logging.getLogger("postern.wildduck.smtp")


def reply_for(failed: dict[str, tuple[int, str]], total: int) -> str:
    """The one SMTP reply for a delivery whose failed recipients are ``failed``: any
    temporary failure makes the whole message temporary (the sender retries, and the
    recipients reached are skipped then); otherwise WildDuck's permanent refusal."""
    if not failed:
        return "250 2.0.0 OK delivered to the mailbox store"
    temporary = [code for code, _ in failed.values() if code < 500]
    if temporary:
        reached = total - len(failed)
        return (
            f"451 4.3.0 Mailbox store answered {temporary[0]} for {len(failed)} of {total} recipients"
            f" ({reached} reached), try again later"
        )
    code, text = next(iter(failed.values()))
    return f"{code} {text}"


async def deliver_arrival(postern, receiver, arrival: Arrival) -> str:
    """``on_message`` of the front door: the message, parsed within Postern's limits by
    the listener, is screened like smtp_local's (sender checks, inbound policy, allow and
    block lists: docs/trust.md), then goes to WildDuck over LMTP; the reply says how
    that went. A copy the policy holds back stays in Postern's quarantine and never
    reaches WildDuck; if WildDuck does not take the others, the held copies are let go
    too, so the sender's retry (or bounce) stands for the whole message."""
    # Retries are recognised by the bytes the sender sent: the stamped ones differ on
    # every attempt (a new verdict id in our Authentication-Results).
    digest = hashlib.sha256(arrival.raw).hexdigest()
    held: dict[str, str] = {}
    authentication = ""
    if postern.config.trust.verify:
        verdict_id = new_id("vrd")
        screened = await screen(postern, arrival, note=f"verdict {verdict_id}")
        if screened.refusal:
            return screened.refusal
        arrival, held, authentication = screened.arrival, screened.held, screened.authentication
        try:
            # Recorded before WildDuck has the message: the watcher may ingest it at once.
            await arrival.runner.run(record_verdict, verdict_id, authentication, arrival)
        except Exception:  # the sender keeps the message and retries
            log.exception("could not record the verdict of a message from %s; answered 451", arrival.mail_from)
            return TEMPORARY
    to_wildduck = [r for r in arrival.recipients if r.strip().lower() not in held]
    kept: list[str] = []
    try:
        if held:
            kept = await arrival.runner.run(hold_copies, arrival, held, authentication)
        failed = {}
        if to_wildduck:
            failed = await arrival.runner.run(
                deliver_once, receiver, arrival.mail_from, to_wildduck, arrival.raw, digest=digest
            )
    except Exception:  # the database, most likely: the sender keeps the message and retries
        log.exception("could not hand a message from %s to WildDuck; answered 451", arrival.mail_from)
        await _let_go(arrival, kept)
        return TEMPORARY
    # The same answer whether or not copies were held: the sender is not told.
    reply = reply_for(failed, len(to_wildduck))
    if failed:
        log.warning("WildDuck did not take a message from %s for %s: %s", arrival.mail_from, sorted(failed), reply)
        await _let_go(arrival, kept)
    return reply


async def _let_go(arrival: Arrival, kept: list[str]) -> None:
    if not kept:
        return
    try:
        await arrival.runner.run(release_holds, kept)
    except Exception:  # left held: a human sees one copy too many, nothing is lost
        log.exception("could not let go of held copies %s after a failed delivery", kept)


def record_verdict(verdict_id: str, authentication: str, arrival: Arrival) -> None:
    parsed = arrival.parsed
    with write_transaction():
        WildDuckVerdict.create(
            id=verdict_id,
            authentication=authentication,
            tls=arrival.tls,
            message_id=(parsed.message_id or "")[:998],
            from_address=single_from(parsed)[:320],
        )


def hold_copies(arrival: Arrival, held: dict[str, str], authentication: str) -> list[str]:
    parsed, raw, sender, tls = arrival.parsed, arrival.raw, arrival.mail_from, arrival.tls
    with write_transaction():
        return [
            hold(arrival.inboxes[a], parsed, raw, sender, reason, authentication, tls).id for a, reason in held.items()
        ]


def release_holds(ids: list[str]) -> None:
    with write_transaction():
        QuarantinedMessage.delete().where(QuarantinedMessage.id.in_(ids)).execute()


def run_front_door(postern) -> None:
    """Service entry point (``postern service run smtp``) while wildduck receives."""
    receiver = postern.backend("receive")
    run_listener(postern, receiver.options.listener(), functools.partial(deliver_arrival, postern, receiver))
