"""Bookkeeping that waits until the event loop's current iteration has answered.

When a ring wakes hundreds of parked waits, their responses are all written in one
loop iteration, one after another on the worker's one thread. Whatever each response
does besides answering (its access line, its Prometheus samples) would delay every
response after it: the last waiter's wake paid for all the earlier waiters' bookkeeping.
``after_iteration`` queues that work to run, in order, once the iteration's ready
callbacks (those responses) have run.
"""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)

_local = threading.local()  # each thread runs at most one loop at a time


def after_iteration(fn, *args) -> None:
    """Run ``fn(*args)`` after the current event-loop iteration, or now outside a loop.
    An exception is logged and does not stop the rest of the queue."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    queue = getattr(_local, "queue", None)
    # A queue belongs to the loop that will flush it: a loop closed before its flush
    # ran (tests start and stop many) must not leave later work waiting on it.
    if queue is None or _local.loop is not loop:
        queue = _local.queue = []
        _local.loop = loop
        loop.call_soon(_flush, queue)
    queue.append((fn, args))


def _flush(queue: list) -> None:
    if getattr(_local, "queue", None) is queue:
        _local.queue = _local.loop = None  # work queued while this runs goes to the next iteration
    for fn, args in queue:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 -- bookkeeping must not lose the rest of the queue
            log.exception("deferred %r failed", fn)
