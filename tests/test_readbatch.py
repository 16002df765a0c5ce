"""ReadBatcher: the reads asked for in one event-loop iteration share one pool job, and
each caller gets its own answer (or the job's error)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from postern.core.db import DatabaseRunner
from postern.core.readbatch import ReadBatcher


@pytest.fixture
def runner(db):
    """The API's own database runner, on the test database."""
    runner = DatabaseRunner(2)
    yield runner
    runner.shutdown()


def test_calls_of_one_iteration_share_one_job_and_get_their_own_answers(runner):
    threads = []

    def doubled(calls):
        threads.append(threading.get_ident())
        return [a * 2 + b for a, b in calls]

    batcher = ReadBatcher(runner, doubled)

    async def main():
        first = await asyncio.gather(*(batcher.run(i, 1) for i in range(10)))
        second = await batcher.run(5, 0)  # a later iteration: a job of its own
        return first, second

    first, second = asyncio.run(main())
    assert first == [i * 2 + 1 for i in range(10)] and second == 10
    assert batcher.jobs == 2 and len(threads) == 2 and threading.get_ident() not in threads


def test_max_batch_splits_a_burst_into_jobs_in_call_order(runner):
    seen: list[list] = []

    def record(calls):
        seen.append(list(calls))
        return [a for (a,) in calls]

    batcher = ReadBatcher(runner, record, max_batch=4)

    async def main():
        return await asyncio.gather(*(batcher.run(i) for i in range(10)))

    assert asyncio.run(main()) == list(range(10))
    # The pool may run the jobs in any order; each holds consecutive calls.
    assert sorted(seen) == [[(0,), (1,), (2,), (3,)], [(4,), (5,), (6,), (7,)], [(8,), (9,)]]


def test_an_error_reaches_every_caller_of_its_batch_and_not_the_next(runner):
    calls_made = []

    def flaky(calls):
        calls_made.append(len(calls))
        if len(calls_made) == 1:
            raise ConnectionError("database gone")
        return [a for (a,) in calls]

    batcher = ReadBatcher(runner, flaky)

    async def main():
        failed = await asyncio.gather(*(batcher.run(i) for i in range(3)), return_exceptions=True)
        return failed, await batcher.run(7)

    failed, later = asyncio.run(main())
    assert all(isinstance(e, ConnectionError) for e in failed) and len(failed) == 3
    assert later == 7 and calls_made == [3, 1]


def test_a_caller_that_went_away_does_not_disturb_the_others(runner):
    release = threading.Event()

    def slow(calls):
        release.wait(5)
        return [a for (a,) in calls]

    batcher = ReadBatcher(runner, slow)

    async def main():
        leaving = asyncio.ensure_future(batcher.run(1))
        staying = asyncio.ensure_future(batcher.run(2))
        await asyncio.sleep(0.05)
        leaving.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return await asyncio.wait_for(staying, 5)

    assert asyncio.run(main()) == 2
