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
import weakref

log = logging.getLogger(__name__)

# A loop's queue, flushed by the one callback it scheduled. Keyed by the loop, not the
# thread: a loop stopped with its flush pending runs it when it runs again, on whatever
# thread; one closed before that is never run again, and its entry goes with it.
_queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def after_iteration(fn, *args) -> None:
    """Run ``fn(*args)`` after the current event-loop iteration, or now outside a loop.
    An exception is logged and stops nothing else."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _run(fn, args)
        return
    queue = _queues.get(loop)
    if queue is None:
        queue = [(fn, args)]
        loop.call_soon(_flush, loop, queue)
        _queues[loop] = queue
    else:
        queue.append((fn, args))


def _flush(loop, queue: list) -> None:
    if _queues.get(loop) is queue:
        del _queues[loop]  # work queued while this runs goes to the next iteration
    for fn, args in queue:
        _run(fn, args)


def _run(fn, args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 -- bookkeeping must not fail the response, or the rest of the queue
        log.exception("deferred %r failed", fn)
