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
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from postern.core import bell, metrics
from postern.core.db import is_postgres

log = logging.getLogger("postern.doorbell")

CHANNEL = "mail"
SAFETY_RECHECK = 15.0


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


class Waiters:
    """This worker's parked waiters, by inbox, and the listener that wakes them."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = None
        #: Rings seen per inbox. A store read tagged with generation g reflects every
        #: commit whose ring arrived before it started.
        self._generation: dict[str, int] = defaultdict(int)
        self._reads: dict[tuple, tuple[int, asyncio.Future]] = {}

    def subscribe(self, inbox_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[inbox_id].add(event)
        return event

    def generation(self, inbox_id: str) -> int:
        return self._generation.get(inbox_id, 0)

    async def read_shared(self, inbox_id: str, key: tuple, since: int, make):
        """Run ``make()`` once for all waiters woken together on the same ``key``.

        A waiter that cleared its event at generation ``since`` may share a read that
        started at that generation or later: any commit the read could miss rings
        after the waiter cleared its event, so the waiter looks again.
        """
        found = self._reads.get(key)
        if found is None or found[0] < since:
            future = asyncio.ensure_future(make())
            found = (self.generation(inbox_id), future)
            self._reads[key] = found
            future.add_done_callback(lambda _, key=key, found=found: self._forget(key, found))
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
        gone: asyncio.Event | None = None,
        shared: bool = True,
    ) -> tuple[bytes | None, int]:
        """Wait up to ``timeout`` seconds for ``read(cursor)`` to find mail.

        ``read`` returns the encoded answer (None: nothing for the caller) and the cursor
        after what it scanned; it is shared by every waiter of this worker reading the same
        inbox from the same cursor. ``claim(old, new)``, for a wait on a delivery cursor,
        moves the stored cursor by compare-and-swap and returns ``(won, seq)``: a waiter
        that lost reads on from ``seq`` (another wait handed those messages over). A
        ``gone`` event set (the client left) ends the wait without claiming anything.
        ``shared=False`` runs each waiter's ``read`` on its own (``wait_for_code``, whose
        read claims what it finds for its one caller).
        Returns the answer, or None on timeout, and the cursor to report.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.ensure_listening()
        # One subscription for the whole wait, cleared before each read of the store:
        # a ring for a commit the read might miss arrives after the clear and sets it.
        event = self.subscribe(inbox_id)
        relay = asyncio.ensure_future(_set_when(gone, event)) if gone is not None else None
        metrics.WAITERS.inc()
        woken = None  # when a ring last woke this wait
        try:
            while True:
                event.clear()
                if gone is not None and gone.is_set():
                    log.info("wait on %s ended early: the client disconnected", inbox_id)
                    return None, cursor
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
                    if woken is not None:
                        metrics.WAKE_LATENCY.observe(loop.time() - woken)
                    return body, cursor
                if loop.time() >= deadline:
                    return None, cursor
                if cursor != before:
                    continue  # a batch of our own sent mail: read on at once
                try:
                    await asyncio.wait_for(event.wait(), min(deadline - loop.time(), SAFETY_RECHECK))
                    woken = loop.time()
                except TimeoutError:
                    woken = None  # re-read the store: covers a lost ring
        finally:
            metrics.WAITERS.dec()
            if relay is not None:
                relay.cancel()
            self.unsubscribe(inbox_id, event)

    def unsubscribe(self, inbox_id: str, event: asyncio.Event) -> None:
        events = self._events.get(inbox_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[inbox_id]

    def wake(self, inbox_id: str) -> None:
        self._generation[inbox_id] += 1
        for event in self._events.get(inbox_id, ()):
            event.set()

    def wake_all(self) -> None:
        for inbox_id in list(self._events):
            self.wake(inbox_id)

    def waiting(self) -> int:
        return sum(len(events) for events in self._events.values())

    def _rung(self, topics: list[str]) -> None:
        if bell.ALL in topics:
            self.wake_all()  # rings may have been missed: every waiter reads again
            return
        for inbox_id in topics:
            self.wake(inbox_id)

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


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
