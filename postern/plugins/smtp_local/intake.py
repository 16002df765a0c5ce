"""smtp_local's SMTP service: the core's listener (postern.core.smtp), with each message
stored in the core's database before the 250. Imported only by the process that runs the
service (``receiver.run_smtp``): the listener, the ingest path and the sender checks are
a third of a process's memory, and every other Postern process loads this backend too."""

from __future__ import annotations

import dataclasses
import functools
import logging

from postern.core import quarantine
from postern.core.db import FAULT_FULL, DatabaseRunner, GroupCommitter, database_fault
from postern.core.mail import reportintake
from postern.core.mail.ingest import MailRejected, announce, readable, store
from postern.core.smtp.listener import run_listener
from postern.core.smtp.screening import screen
from postern.core.smtp.session import Arrival, Handler

log = logging.getLogger("postern.smtp")


async def store_arrival(postern, arrival: Arrival) -> str:
    """``on_message`` of smtp_local: store the message for its inboxes, the 250 after
    the commit; anything unforeseen is a 4xx, so the sender keeps the message."""
    if reportintake.REPORTS in arrival.inboxes.values() or reportintake.looks_like_report(arrival.parsed.headers):
        try:
            reply, arrival = await arrival.runner.run(reportintake.take, postern, arrival)
        except Exception:  # the sender keeps the report and retries
            log.exception("could not record a bounce or complaint report from %s; answered 451", arrival.mail_from)
            return "451 4.3.0 Temporary failure, try again later"
        if arrival is None:
            return reply
    # Outside the group commit: checking the sender, deriving text and finding codes is
    # network and CPU work that must not hold the write lock.
    authentication, held = "", {}
    if postern.config.trust.verify:
        screened = await screen(postern, arrival)
        if screened.refusal:
            return screened.refusal
        arrival, authentication, held = screened.arrival, screened.authentication, screened.held
    reading = await arrival.runner.run(readable, postern, arrival.parsed, arrival.mail_from)
    if authentication:
        reading = dataclasses.replace(reading, authentication=authentication)
    try:
        stored, kept = await arrival.committer.run(
            keep, postern, arrival, reading, held, after=lambda kept: announce(postern, kept[0])
        )
    except MailRejected as exc:
        log.info("refused a message from %s: %s", arrival.mail_from, exc.message)
        return f"{exc.smtp_code} {exc.message}"
    except Exception as exc:  # anything unforeseen: the sender must retry, never lose it
        fault = database_fault(exc)
        if fault is not None and fault.kind == FAULT_FULL:  # RFC 3463 4.3.1: the sender keeps it, retries
            log.warning("out of storage; answered 452 to %s: %s", arrival.mail_from, fault.error)
            return "452 4.3.1 Insufficient system storage, try again later"
        if fault is not None:
            log.warning("database unavailable; answered 451 to %s: %s", arrival.mail_from, fault.error)
        else:
            log.exception("could not store a message from %s; answered 451", arrival.mail_from)
        return "451 4.3.0 Temporary failure storing the message, try again later"
    # A held copy is named by the id it will have when released: the reply looks the
    # same whatever the policy did, and the sender is not told.
    ids = {m.inbox_id: m.id for m in stored} | {row.inbox_id: row.message_id for row in kept}
    inboxes = [arrival.inboxes.get(r.strip().lower()) for r in arrival.recipients]
    in_order = dict.fromkeys([ids[i.id] for i in inboxes if i is not None and i.id in ids] + list(ids.values()))
    return f"250 2.0.0 OK stored as {' '.join(in_order)}"


def keep(postern, arrival: Arrival, reading, held: dict[str, str]) -> tuple[list, list]:
    """Inside the group commit: store the copies the policy delivers and hold back the
    others (``held``: address -> reason); returns the stored messages and held rows."""
    deliver = [r for r in arrival.recipients if r.strip().lower() not in held]
    stored = []
    if deliver:
        parsed, raw, inboxes = arrival.parsed, arrival.raw, arrival.inboxes
        stored = store(postern, parsed, raw, arrival.mail_from, deliver, inboxes, None, reading, arrival.tls)
    kept = [
        quarantine.hold(
            arrival.inboxes[address],
            arrival.parsed,
            arrival.raw,
            arrival.mail_from,
            reason,
            reading.authentication,
            arrival.tls,
        )
        for address, reason in held.items()
    ]
    return stored, kept


def make_handler(postern, runner: DatabaseRunner, committer: GroupCommitter) -> Handler:
    """The session handler smtp_local's listener serves (tests and fuzzers drive it too)."""
    options = postern.backend("receive").options
    return Handler(postern, options, functools.partial(store_arrival, postern), runner, committer)


def serve(postern) -> None:
    """Serve until SIGTERM (``postern service run smtp``, through ``receiver.run_smtp``)."""
    run_listener(postern, postern.backend("receive").options, functools.partial(store_arrival, postern))
