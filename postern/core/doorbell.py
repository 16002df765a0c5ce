"""Wake-ups for ``wait_for_email``: the bell's ``mail`` channel (postern.core.bell).

A waiter always reads the store; a ring (the inbox ids that got mail) only says "look
again". On PostgreSQL the NOTIFY is issued inside the ingest transaction, so it is
delivered exactly when the message becomes visible; on SQLite the datagrams are sent
right after the commit. A lost ring costs latency, not mail: waiters also re-read the
store every ``SAFETY_RECHECK`` seconds, and all of them when the bell says rings may
have been missed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial

from postern.core import bell, metrics
from postern.core.db import is_postgres
from postern.core.deferred import after_iteration

log = logging.getLogger("postern.doorbell")

CHANNEL = "mail"
SAFETY_RECHECK = 15.0
#: Re-checks and timeouts fire on this grid of the loop's clock, one timer per slot
#: shared by every wait due in it: a wait ends at most this much after its timeout.
RECHECK_GRAIN = 0.05

# The cyclic garbage collector, not the wake, was most of the time to answer thousands of
# waiters woken at once: answering them allocates enough to trigger collections, and each
# one walks every parked waiter's objects (5,000 waiters: 350 ms of a 520 ms wake, one full
# collection 230 ms; bench/README.md). A wake of at least GC_PAUSE_WAITERS holds collection
# off for GC_PAUSE_PER_WAITER seconds each, capped at GC_PAUSE_MAX: reference counting
# still frees nearly everything, and the cycles made meanwhile are collected right after.
GC_PAUSE_WAITERS = 100
GC_PAUSE_PER_WAITER = 0.0002
GC_PAUSE_MAX = 2.0
_gc_resume: threading.Timer | None = None
_gc_paused_at = 0.0
_gc_lock = threading.Lock()


def ring_in_transaction(inbox_ids) -> None:
    """Call inside the committing transaction (PostgreSQL delivers at COMMIT)."""
    inbox_ids = set(inbox_ids)
    if is_postgres() and inbox_ids:
        bell.ring(CHANNEL, inbox_ids)


def ring_after_commit(inbox_ids) -> None:
    """Call after the commit: wake SQLite-mode workers on this host."""
    inbox_ids = set(inbox_ids)
    if not is_postgres() and inbox_ids:
        bell.ring(CHANNEL, inbox_ids)


class Departure:
    """Set when a waiter's client leaves (``_client_leaves`` in postern.api.messages); the
    wait it is attached to ends at once instead of at its next wake or timeout."""

    __slots__ = ("_left", "_on_set")

    def __init__(self):
        self._left = False
        self._on_set: Callable[[], None] | None = None

    def is_set(self) -> bool:
        return self._left

    def set(self) -> None:
        self._left = True
        if self._on_set is not None:
            self._on_set()


def _pause_gc(seconds: float) -> None:
    """Hold automatic garbage collection off for ``seconds``; a later pause extends it, but
    never past GC_PAUSE_MAX after it began (back-to-back waves of wakes still let the
    collector run between them). Nothing is done if someone else turned collection off.
    The resume is a timer thread, not the event loop's: collection comes back on even if
    the loop that paused it stops meanwhile."""
    global _gc_resume, _gc_paused_at
    now = time.monotonic()
    with _gc_lock:
        if _gc_resume is None:
            if not gc.isenabled():
                return  # not ours to turn back on
            gc.disable()
            _gc_paused_at = now
        else:
            _gc_resume.cancel()
        _gc_resume = threading.Timer(min(now + seconds, _gc_paused_at + GC_PAUSE_MAX) - now, _resume_gc)
        _gc_resume.daemon = True
        _gc_resume.start()


def _resume_gc() -> None:
    global _gc_resume
    with _gc_lock:
        _gc_resume = None
        gc.enable()


def _resolve(future: asyncio.Future, rang: bool) -> None:
    if not future.done():
        future.set_result(rang)


class _Parked:
    """What a wait's re-check resolves: the future the wait is parked on now (None once
    the wait is over), and whether a re-check for it is pending. One per wait, however
    often it parks again."""

    __slots__ = ("future", "due", "final")

    def __init__(self):
        self.future: asyncio.Future | None = None
        self.due = False  # a slot holds it and has not fired
        self.final = False  # that slot is the wait's deadline


class _Rechecks:
    """Re-check and timeout timers of one loop's parked waits, one loop timer per
    ``RECHECK_GRAIN`` slot instead of one per wait. A ``TimerHandle`` (with its copied
    context and its place in the loop's heap) was ~560 B of every parked wait, and
    a woken wait cancelled its own, which the loop pays for again when it prunes its
    heap (bench/README.md, "Parked waiters")."""

    def __init__(self):
        self._slots: dict[int, list[_Parked]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, when: float, parked: _Parked, final: bool) -> None:
        """Resolve ``parked.future`` with False at ``when`` or up to one grain later.
        Whether it fired is ``parked.due``, never the clock: a slot's time and the loop's
        clock need not compare equal when it fires (uvloop counts whole milliseconds)."""
        slot = math.ceil(when / RECHECK_GRAIN)
        due = self._slots.get(slot)
        if due is None:
            due = self._slots[slot] = []
            loop.call_at(slot * RECHECK_GRAIN, self._fire, slot)
        due.append(parked)
        parked.due, parked.final = True, final

    def _fire(self, slot: int) -> None:
        for parked in self._slots.pop(slot, ()):
            parked.due = False
            if parked.future is not None and not parked.future.done():
                parked.future.set_result(False)


class Waiters:
    """This worker's parked waiters, by inbox, and the listener that wakes them.

    A parked wait is one bare future in its inbox's set, resolved by a ring (True) or by
    its own timer (False): waking N waiters is N ``set_result`` calls and N task resumes.
    (``asyncio.Event`` + ``wait_for`` cost a task, a shield and a cancelled timer per
    waiter per wake; with 10,000 parked that was most of the wake time, bench/README.md.)
    """

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._parked: dict[str, set[asyncio.Future]] = {}
        self._listener = None
        #: Rings seen per inbox. A store read tagged with generation g reflects every
        #: commit whose ring arrived before it started.
        self._generation: dict[str, int] = defaultdict(int)
        self._reads: dict[tuple, tuple[int, asyncio.Future]] = {}
        self._rechecks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> _Rechecks

    def _park(self, inbox_id: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        future = loop.create_future()
        parked = self._parked.get(inbox_id)
        if parked is None:
            parked = self._parked[inbox_id] = set()
        parked.add(future)
        return future

    def _unpark(self, inbox_id: str, future: asyncio.Future) -> None:
        parked = self._parked.get(inbox_id)
        if parked is not None:
            parked.discard(future)
            if not parked:
                del self._parked[inbox_id]

    def generation(self, inbox_id: str) -> int:
        return self._generation.get(inbox_id, 0)

    async def read_shared(self, inbox_id: str, key: tuple, since: int, make):
        """Run ``make()`` once for all waiters woken together on the same ``key``.

        A waiter that parked at generation ``since`` may share a read that started at
        that generation or later: any commit the read could miss rings after the waiter
        parked, so the waiter looks again.
        """
        found = self._reads.get(key)
        if found is None or found[0] < since:
            future = asyncio.ensure_future(make())
            found = (self.generation(inbox_id), future)
            self._reads[key] = found
            future.add_done_callback(lambda _, key=key, found=found: self._forget(key, found))
        if found[1].done():
            return found[1].result()
        return await asyncio.shield(found[1])

    def _forget(self, key, found) -> None:
        if self._reads.get(key) is found:
            del self._reads[key]

    async def wait(
        self,
        inbox_id: str,
        cursor: int,
        timeout: float,
        read: Callable[[int], Awaitable[tuple[bytes | None, int]]],
        *,
        claim: Callable[[int, int], Awaitable] | None = None,
        gone: Departure | None = None,
        shared: bool = True,
    ) -> tuple[bytes | None, int]:
        """Wait up to ``timeout`` seconds for ``read(cursor)`` to find mail.

        ``read`` returns the encoded answer (None: nothing for the caller) and the cursor
        after what it scanned; it is shared by every waiter of this worker reading the same
        inbox from the same cursor. ``claim(old, new)``, for a wait on a delivery cursor,
        moves the stored cursor by compare-and-swap and returns ``(won, seq)``: a waiter
        that lost reads on from ``seq`` (another wait handed those messages over). A
        ``gone`` departure set (the client left) ends the wait without claiming anything.
        ``shared=False`` runs each waiter's ``read`` on its own (``wait_for_code``, whose
        read claims what it finds for its one caller).
        Returns the answer, or None on timeout, and the cursor to report.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.ensure_listening()
        metrics.WAITERS.inc()
        woken = None  # when a ring last woke this wait
        rung = None
        parked = _Parked()
        expired = False  # the deadline's slot fired: the next empty read ends the wait
        rechecks = self._rechecks.get(loop)
        if rechecks is None:
            rechecks = self._rechecks[loop] = _Rechecks()
        try:
            while True:
                if rung is not None:
                    self._unpark(inbox_id, rung)
                # Parked before each read of the store: a ring for a commit the read
                # might miss arrives after this and resolves it.
                rung = self._park(inbox_id, loop)
                if gone is not None:
                    if gone.is_set():
                        log.info("wait on %s ended early: the client disconnected", inbox_id)
                        return None, cursor
                    gone._on_set = partial(_resolve, rung, True)
                since = self.generation(inbox_id)
                before = cursor
                if shared:
                    body, cursor = await self.read_shared(inbox_id, (inbox_id, before), since, lambda c=before: read(c))
                else:
                    body, cursor = await read(before)
                if cursor != before and claim is not None:
                    if gone is not None and gone.is_set():
                        return None, before  # nobody to hand the mail to: leave it unclaimed
                    won, cursor = await claim(before, cursor)
                    if not won:
                        continue  # another wait of this agent took it: read on from there
                if body is not None:
                    if woken is not None:  # recorded after the wave's answers (core/deferred.py)
                        after_iteration(metrics.WAKE_LATENCY.observe, loop.time() - woken)
                    return body, cursor
                if expired or loop.time() >= deadline:
                    return None, cursor
                if cursor != before:
                    continue  # a batch of our own sent mail: read on at once
                if not rung.done():
                    parked.future = rung
                    if not parked.due:
                        recheck = loop.time() + SAFETY_RECHECK
                        rechecks.add(loop, min(deadline, recheck), parked, final=deadline <= recheck)
                    await rung
                    expired = parked.final and not parked.due
                # rung by the bell: time the wake; the timer: re-read the store (covers a lost ring)
                woken = loop.time() if rung.result() else None
        finally:
            after_iteration(metrics.WAITERS.dec)
            parked.future = None  # its slot may fire later: it finds nothing to resolve
            if gone is not None:
                gone._on_set = None
            if rung is not None:
                self._unpark(inbox_id, rung)

    def wake(self, inbox_id: str) -> None:
        self.wake_many((inbox_id,))

    def wake_many(self, inbox_ids) -> None:
        """Wake every wait on these inboxes. The collector pause counts the whole wave:
        a message to 100 inboxes wakes 100 small sets that are one wave to answer."""
        woken = []
        for inbox_id in inbox_ids:
            self._generation[inbox_id] += 1
            woken.append(self._parked.pop(inbox_id, ()))
        total = sum(len(parked) for parked in woken)
        if total >= GC_PAUSE_WAITERS:
            _pause_gc(total * GC_PAUSE_PER_WAITER)
        for parked in woken:
            for future in parked:
                if not future.done():
                    future.set_result(True)

    def wake_all(self) -> None:
        self.wake_many(list(self._parked))

    def waiting(self) -> int:
        return sum(len(parked) for parked in self._parked.values())

    def _rung(self, topics: list[str]) -> None:
        if bell.ALL in topics:
            self.wake_all()  # rings may have been missed: every waiter reads again
            return
        self.wake_many(topics)

    def ensure_listening(self) -> None:
        """Start this process's listener on first use, inside the running loop."""
        if self._listener is None:
            try:
                self._listener = bell.AsyncListener(CHANNEL, self.database_url, self._rung)
            except OSError as exc:
                log.warning("doorbell listener failed to start (%s); waiters fall back to re-checking", exc)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
