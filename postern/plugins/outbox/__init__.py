"""``outbox``: the service that retries queued outbound mail, recovers messages
whose sending process died before delivering them, and follows messages a send
backend accepted (``sending``) to their outcome."""

import logging
import signal
import threading

from postern.core.hookspecs import hookimpl
from postern.core.services import Service

log = logging.getLogger("postern.outbox")
INTERVAL = 5.0


def run_outbox(postern) -> None:
    import peewee

    from postern.core.db import database, database_fault
    from postern.core.mail.confirm import confirm_due
    from postern.core.mail.delivery import deliver_due

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("outbox running: due messages every %ss", INTERVAL)
    while not stop.is_set():
        try:
            with database.connection_context():
                while (deliver_due(postern) + confirm_due(postern)) and not stop.is_set():
                    pass  # work was due: there may be more
        except peewee.PeeweeException as exc:
            # Locked, unreachable or full: claims are leases in the database, so nothing
            # is lost by trying again next round. Anything else is a bug: crash, restart.
            fault = database_fault(exc)
            if fault is None:
                raise
            log.warning("outbox: %s (%s); trying again in %ss", fault.kind, fault.error, INTERVAL)
        stop.wait(INTERVAL)


@hookimpl
def postern_services(postern):
    return [Service("outbox", run_outbox, "retries queued outbound mail and confirms accepted sends")]
