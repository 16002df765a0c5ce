"""Postern's SMTP listener in front of WildDuck: RCPT is checked against the core as
with smtp_local, and DATA is parsed within Postern's limits, then handed to WildDuck
over LMTP (its real delivery path) before the ``250``. Nothing is stored here: the
watcher ingests what WildDuck holds, so there is one ingest path and no duplicate.

SMTP has one reply to DATA, LMTP one per recipient. When WildDuck takes the message
for some recipients and not others, the sender gets a ``451`` and retries: the
recipients already reached are remembered (postern.plugins.wildduck.lmtp) and the
retry goes to the others only.
"""

from __future__ import annotations

import functools
import logging

from postern.core.smtp.listener import run_listener
from postern.core.smtp.session import Arrival
from postern.plugins.wildduck.lmtp import deliver_once

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


async def deliver_arrival(receiver, arrival: Arrival) -> str:
    """``on_message`` of the front door: the message, parsed within Postern's limits by
    the listener, goes to WildDuck over LMTP; the reply says how that went."""
    failed = await arrival.runner.run(deliver_once, receiver, arrival.mail_from, arrival.recipients, arrival.raw)
    reply = reply_for(failed, len(arrival.recipients))
    if failed:
        log.warning("WildDuck did not take a message from %s for %s: %s", arrival.mail_from, sorted(failed), reply)
    return reply


def run_front_door(postern) -> None:
    """Service entry point (``postern service run smtp``) while wildduck receives."""
    receiver = postern.backend("receive")
    run_listener(postern, receiver.options.listener(), functools.partial(deliver_arrival, receiver))
