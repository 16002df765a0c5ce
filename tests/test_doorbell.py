"""``Waiters`` (postern.core.doorbell) with many parked waits: a ring answers every one of
them from one shared read, and a big wave of wakes holds the cyclic garbage collector off
for a bounded time (bench/README.md, wait_latency.py), then turns it back on."""

from __future__ import annotations

import asyncio
import gc
import math
import time

from postern.core import doorbell
from postern.core.doorbell import GC_PAUSE_MAX, GC_PAUSE_WAITERS, Waiters


def park_and_ring(db_url: str, count: int) -> tuple[list, int, bool]:
    """Park ``count`` waits on one inbox, ring it, and return their answers, how many
    times the store was read for them, and whether collection was off right after the ring."""

    async def scenario():
        waiters = Waiters(db_url)
        reads, mail = [], asyncio.Event()

        async def read(cursor):
            reads.append(cursor)
            return (b"mail" if mail.is_set() else None), cursor + (1 if mail.is_set() else 0)

        try:
            waits = [asyncio.ensure_future(waiters.wait("inbox_1", 0, 60, read)) for _ in range(count)]
            while waiters.waiting() < count or len(reads) < 1:
                await asyncio.sleep(0.01)
            before = len(reads)
            mail.set()
            waiters.wake("inbox_1")
            paused = not gc.isenabled()
            answers = await asyncio.wait_for(asyncio.gather(*waits), 10)
            return answers, len(reads) - before, paused
        finally:
            waiters.close()

    return asyncio.run(scenario())


def test_a_big_wave_of_wakes_pauses_collection_and_then_resumes_it(db_url):
    count = GC_PAUSE_WAITERS * 3
    answers, reads, paused = park_and_ring(db_url, count)
    assert answers == [(b"mail", 1)] * count
    assert reads == 1  # one read of the store answered every waiter woken together
    assert paused
    deadline = time.monotonic() + GC_PAUSE_MAX + 2
    while not gc.isenabled():
        assert time.monotonic() < deadline, "the collector stayed off"
        time.sleep(0.02)
    assert doorbell._gc_resume is None


def test_a_small_wake_leaves_collection_alone(db_url):
    answers, reads, paused = park_and_ring(db_url, GC_PAUSE_WAITERS - 1)
    assert answers == [(b"mail", 1)] * (GC_PAUSE_WAITERS - 1) and reads == 1
    assert not paused and gc.isenabled()


def test_collection_turned_off_by_someone_else_stays_off(db_url):
    gc.disable()
    try:
        _, _, paused = park_and_ring(db_url, GC_PAUSE_WAITERS * 2)
        time.sleep(0.05)
        assert paused and not gc.isenabled() and doorbell._gc_resume is None
    finally:
        gc.enable()


def test_a_ring_for_many_inboxes_counts_as_one_wave(db_url):
    """A message to many inboxes wakes many small sets at once: the collector pause
    looks at the whole wave, not at each inbox's few waiters."""

    async def scenario():
        waiters = Waiters(db_url)
        inboxes = [f"inbox_{n}" for n in range(GC_PAUSE_WAITERS // 2 + 1)]

        async def read(cursor):
            return None, cursor

        try:
            waits = [asyncio.ensure_future(waiters.wait(i, 0, 60, read)) for i in inboxes for _ in range(2)]
            while waiters.waiting() < len(waits):
                await asyncio.sleep(0.01)
            waiters._rung(inboxes)
            paused = not gc.isenabled()
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            return paused
        finally:
            waiters.close()

    try:
        assert asyncio.run(scenario())
    finally:
        deadline = time.monotonic() + GC_PAUSE_MAX + 2
        while not gc.isenabled():
            assert time.monotonic() < deadline, "the collector stayed off"
            time.sleep(0.02)


def timed(waiters: Waiters, loop) -> int:
    """Waits holding a re-check or timeout timer, so parked after their read. Not
    ``waiting()``: that counts a wait from before its first read, when it holds no timer
    yet (on PostgreSQL a test's first poll came in between, every time)."""
    rechecks = waiters._rechecks.get(loop)
    return sum(p.future is not None for due in rechecks._slots.values() for p in due) if rechecks else 0


def test_waits_parked_together_share_their_timeout_timers_and_end_on_time(db_url):
    """Re-check and timeout timers are one per RECHECK_GRAIN slot, not one per wait:
    200 waits parked in one instant use at most two, each wait still ends at or after
    its timeout and within a grain of it, and nothing stays scheduled afterwards."""
    from postern.core.doorbell import RECHECK_GRAIN

    async def scenario():
        waiters = Waiters(db_url)
        loop = asyncio.get_running_loop()

        async def read(cursor):
            return None, cursor

        try:
            waiters.ensure_listening()  # on PostgreSQL a connection: not part of any wait's time
            started = loop.time()
            waits = [asyncio.ensure_future(waiters.wait("inbox_1", 0, 0.3, read)) for _ in range(200)]
            while timed(waiters, loop) < 200:
                await asyncio.sleep(0.005)
            slots = len(waiters._rechecks[loop]._slots)
            ended = []
            for wait in asyncio.as_completed(waits):
                ended.append((await wait, loop.time() - started))
            return slots, ended, dict(waiters._rechecks[loop]._slots)
        finally:
            waiters.close()

    slots, ended, left = asyncio.run(scenario())
    assert 1 <= slots <= 2
    assert all(answer == (None, 0) for answer, _ in ended)
    assert min(t for _, t in ended) >= 0.3 and max(t for _, t in ended) < 0.3 + RECHECK_GRAIN + 0.25
    assert left == {}


def test_a_woken_wait_leaves_nothing_for_its_pending_timer_to_resolve(db_url):
    async def scenario():
        waiters = Waiters(db_url)
        loop = asyncio.get_running_loop()
        mail = []

        async def read(cursor):
            return (b"mail", cursor + 1) if mail else (None, cursor)

        try:
            wait = asyncio.ensure_future(waiters.wait("inbox_1", 0, 60, read))
            while timed(waiters, loop) < 1:  # parked after its first read, its timer set
                await asyncio.sleep(0.005)
            mail.append(1)
            waiters.wake("inbox_1")
            answer = await asyncio.wait_for(wait, 5)
            pending = [p for due in waiters._rechecks[loop]._slots.values() for p in due]
            return answer, pending
        finally:
            waiters.close()

    answer, pending = asyncio.run(scenario())
    assert answer == (b"mail", 1)
    assert len(pending) == 1 and pending[0].future is None  # its re-check slot remains, holding no future


def test_on_uvloop_every_lost_ring_is_covered_by_a_re_read_until_the_timeout(db_url, monkeypatch):
    """uvloop's clock counts whole milliseconds, so a fired slot's time can compare
    above the clock: a wait must know its re-check fired from the slot, not the clock,
    or it parks with no timer left (no re-read, no timeout). A read that returns at
    once re-parks within the same millisecond, where that went wrong."""
    import uvloop

    monkeypatch.setattr(doorbell, "SAFETY_RECHECK", 0.1)

    async def scenario():
        waiters = Waiters(db_url)
        loop = asyncio.get_running_loop()
        reads = []

        async def read(cursor):
            reads.append(loop.time())
            return None, cursor

        try:
            started = loop.time()
            answer = await asyncio.wait_for(waiters.wait("inbox_1", 0, 1.5, read, shared=False), 5)
            return answer, loop.time() - started, reads
        finally:
            waiters.close()

    answer, took, reads = uvloop.run(scenario())
    assert answer == (None, 0)
    # A wait left with no timer never reads again and never times out (wait_for raises);
    # the bounds leave room for a loaded machine (gaps of 0.43 s seen beside a CI run).
    assert 1.5 <= took < 1.5 + doorbell.RECHECK_GRAIN + 0.6
    gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
    assert len(reads) >= 5 and max(gaps) < 0.1 + doorbell.RECHECK_GRAIN + 0.5, gaps


class _CoarseClockLoop(asyncio.SelectorEventLoop):
    """The stdlib loop with a coarse clock, as uvloop's counts whole milliseconds. Here
    the tick is 30 ms, which does not divide the 50 ms slot grid: a timer is due in the
    tick its time falls in, so most re-checks run while ``time()`` is still below the
    time they were set for, and the wait re-parks within that tick."""

    TICK = 0.03

    def time(self):
        return math.floor(super().time() / self.TICK) * self.TICK

    def call_at(self, when, callback, *args, context=None):
        return super().call_at(math.floor(when / self.TICK) * self.TICK, callback, *args, context=context)


def test_a_re_check_that_fires_below_its_own_time_on_the_clock_still_counts_as_fired(db_url, monkeypatch):
    monkeypatch.setattr(doorbell, "SAFETY_RECHECK", 0.1)
    loop = _CoarseClockLoop()

    async def scenario():
        waiters = Waiters(db_url)
        reads = []

        async def read(cursor):
            reads.append(loop.time())
            return None, cursor

        try:
            answer = await asyncio.wait_for(waiters.wait("inbox_1", 0, 1.2, read, shared=False), 5)
            return answer, reads
        finally:
            waiters.close()

    try:
        answer, reads = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert answer == (None, 0) and len(reads) >= 5  # re-read every ~0.1 s, not parked for good
