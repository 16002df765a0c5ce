"""The services the core itself runs: the outbox (which also runs the retention sweep)
and the webhook dispatcher.

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
import time

from postern.core.hookspecs import hookimpl
from postern.core.services import Service

log = logging.getLogger("postern.outbox")
OUTBOX_INTERVAL = 5.0
#: How often the outbox runs the retention sweep (postern.core.mail.retention).
RETENTION_INTERVAL = 300.0


def run_outbox(postern) -> None:
    """Retry queued outbound mail, recover messages whose sending process died before
    delivering them, and follow messages a send backend accepted to their outcome; every
    ``RETENTION_INTERVAL``, delete mail older than its inbox's retention (docs/retention.md).
    Mail held for human approval past ``[mail] approval_expiry_hours`` expires here too."""
    import peewee

    from postern.core.approval import expire_due
    from postern.core.db import database, database_fault
    from postern.core.mail.confirm import confirm_due
    from postern.core.mail.delivery import deliver_due
    from postern.core.mail.retention import purge_expired

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("outbox running: due messages every %ss", OUTBOX_INTERVAL)
    purge_at = 0.0
    while not stop.is_set():
        try:
            with database.connection_context():
                while (deliver_due(postern) + confirm_due(postern)) and not stop.is_set():
                    pass  # work was due: there may be more
                while expire_due(postern) and not stop.is_set():
                    pass  # mail held for approval past its time (postern.core.approval)
                if time.monotonic() >= purge_at:
                    # Batches of their own, between the sends: a big backlog of expired
                    # mail never holds the write lock for long, nor delays a retry.
                    while purge_expired(postern) and not stop.is_set():
                        deliver_due(postern)
                        confirm_due(postern)
                    purge_at = time.monotonic() + RETENTION_INTERVAL
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
    Service("outbox", run_outbox, "retries queued outbound mail, confirms accepted sends and purges expired mail"),
    Service("webhooks", run_webhooks, "sends signed webhook deliveries, with retries"),
)


@hookimpl
def postern_services(postern):
    return list(CORE_SERVICES)
