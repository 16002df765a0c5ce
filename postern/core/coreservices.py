"""The services the core itself runs: the outbox and the webhook dispatcher.

They are part of Postern, not plugins: ``get_plugin_manager`` registers this module
itself, as the plugin ``core``, before it applies ``[plugins] disabled``, and refuses
a ``disabled`` list that names it or one of these services. So queued mail is always
retried and webhook deliveries always go out. (A hook implementation rather than a
call from ``Postern.services()``: the outbox reaches the mail modules, which reach
the runtime, and the runtime must not reach back.)
"""

from __future__ import annotations

import logging
import signal
import threading

from postern.core.hookspecs import hookimpl
from postern.core.services import Service

log = logging.getLogger("postern.outbox")
OUTBOX_INTERVAL = 5.0


def run_outbox(postern) -> None:
    """Retry queued outbound mail, recover messages whose sending process died before
    delivering them, and follow messages a send backend accepted to their outcome."""
    import peewee

    from postern.core.db import database, database_fault
    from postern.core.mail.confirm import confirm_due
    from postern.core.mail.delivery import deliver_due

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("outbox running: due messages every %ss", OUTBOX_INTERVAL)
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
            log.warning("outbox: %s (%s); trying again in %ss", fault.kind, fault.error, OUTBOX_INTERVAL)
        stop.wait(OUTBOX_INTERVAL)


def run_webhooks(postern) -> None:
    from postern.core.webhooks.service import run_dispatcher

    run_dispatcher(postern)


CORE_SERVICES: tuple[Service, ...] = (
    Service("outbox", run_outbox, "retries queued outbound mail and confirms accepted sends"),
    Service("webhooks", run_webhooks, "sends signed webhook deliveries, with retries"),
)


@hookimpl
def postern_services(postern):
    return list(CORE_SERVICES)
