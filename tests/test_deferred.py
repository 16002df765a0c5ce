"""core/deferred.py: bookkeeping runs after the loop iteration that queued it, in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import pytest

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


def test_outside_a_loop_runs_at_once(caplog):
    done = []
    after_iteration(done.append, "now")
    assert done == ["now"]
    with caplog.at_level(logging.ERROR, logger="postern.core.deferred"):
        after_iteration(lambda: 1 / 0)  # logged, never raised into the caller
    assert "ZeroDivisionError" in caplog.text


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


def test_a_loop_stopped_with_its_flush_pending_runs_it_on_another_thread():
    done = []
    loop = asyncio.new_event_loop()
    loop.call_soon(after_iteration, done.append, "a")
    loop.call_soon(loop.stop)
    loop.run_forever()  # stopped with the flush pending
    assert done == []

    def elsewhere():
        loop.call_soon(after_iteration, done.append, "b")
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.call_soon(loop.stop)
        loop.run_forever()  # the flush of "b" (scheduled last iteration) runs here

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(elsewhere).result()
    loop.call_soon(after_iteration, done.append, "c")  # back on this thread, same loop
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    assert done == ["a", "b", "c"]


def test_under_uvloop_the_answers_go_first():
    uvloop = pytest.importorskip("uvloop")
    done = []

    async def wave():
        for n in range(3):
            after_iteration(done.append, n)
        done.append("answered")
        await asyncio.sleep(0)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(wave())
    finally:
        loop.close()
    assert done == ["answered", 0, 1, 2]
