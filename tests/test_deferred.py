"""core/deferred.py: bookkeeping runs after the loop iteration that queued it, in order."""

from __future__ import annotations

import asyncio
import logging

from postern.core.deferred import after_iteration


def test_runs_after_the_iteration_in_order():
    done = []

    async def wave():
        for n in range(4):
            after_iteration(done.append, n)
        held = list(done)
        await asyncio.sleep(0)
        return held

    assert asyncio.run(wave()) == []
    assert done == [0, 1, 2, 3]


def test_work_queued_by_deferred_work_runs_in_a_later_iteration():
    done = []

    async def chain():
        after_iteration(lambda: (done.append("first"), after_iteration(done.append, "second")))
        await asyncio.sleep(0)
        first = list(done)
        await asyncio.sleep(0)
        return first

    assert asyncio.run(chain()) == ["first"]
    assert done == ["first", "second"]


def test_outside_a_loop_runs_at_once():
    done = []
    after_iteration(done.append, "now")
    assert done == ["now"]


def test_a_failure_is_logged_and_the_rest_still_runs(caplog):
    done = []

    async def wave():
        after_iteration(done.append, 1)
        after_iteration(lambda: 1 / 0)
        after_iteration(done.append, 2)
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="postern.core.deferred"):
        asyncio.run(wave())
    assert done == [1, 2]
    assert "ZeroDivisionError" in caplog.text


def test_a_loop_closed_before_its_flush_does_not_strand_later_work():
    done = []

    loop = asyncio.new_event_loop()
    loop.call_soon(after_iteration, done.append, "lost with its loop")
    loop.call_soon(loop.stop)  # the loop ends with this iteration: the flush never runs
    loop.run_forever()
    loop.close()
    assert done == []

    async def wave():
        after_iteration(done.append, "next loop")
        await asyncio.sleep(0)

    asyncio.run(wave())
    assert done == ["next loop"]
