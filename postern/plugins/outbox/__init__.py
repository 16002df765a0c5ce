"""``outbox``: the service that retries queued outbound mail and recovers messages
whose sending process died before delivering them."""

import logging
import signal
import threading

from postern.core.hookspecs import hookimpl
from postern.core.services import Service

log = logging.getLogger("postern.outbox")
INTERVAL = 5.0


def run_outbox(postern) -> None:
    from postern.core.db import database
    from postern.core.mail.outbound import deliver_due

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("outbox running: due messages every %ss", INTERVAL)
    while not stop.is_set():
        with database.connection_context():
            while deliver_due(postern) and not stop.is_set():
                pass  # a full batch: there may be more
        stop.wait(INTERVAL)


@hookimpl
def postern_services(postern):
    return [Service("outbox", run_outbox, "retries queued outbound mail")]
