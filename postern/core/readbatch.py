"""Reads that many coroutines ask for in the same moment, run as one database job.

A ring for a message to 100 inboxes wakes the waiters of all 100 in one event-loop
iteration, and each inbox's shared read then asks the database thread pool for its page
in the same iteration. One pool job per read cost each of them a thread hand-off, a
connection check and a loop wake-up on the way back, one after another on the worker's
one loop thread: the 100-inbox wake was ~30 ms slower than the one-inbox wake at 1,000
waiters (bench/README.md, "Parked waiters"). Batched, they cost one hand-off, and
the reads of ``wait_for_email`` one statement per 8 inboxes (``reading.inbound_after_each``).
"""

from __future__ import annotations

import asyncio
from functools import partial


class ReadBatcher:
    """Collects the calls of ``run`` made in one loop iteration and answers them with one
    job on ``runner`` (a ``DatabaseRunner``): ``many(calls)`` gets every call's argument
    tuple, in the order called, and returns one result per call. If it raises, every call
    of the batch gets that exception. At most ``max_batch`` calls share a job.

    Only for reads: the calls of a batch share a thread and a connection, not a
    transaction, and a slow read delays the others of its batch.
    """

    def __init__(self, runner, many, max_batch: int = 200):
        self.runner = runner
        self.many = many
        self.max_batch = max_batch
        self._pending: dict[asyncio.AbstractEventLoop, list] = {}
        self.jobs = 0  # pool jobs run, for tests

    async def run(self, *args):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((args, future))
        if len(pending) >= self.max_batch:
            self._flush(loop)
        return await future

    def _flush(self, loop) -> None:
        batch = self._pending.pop(loop, None)
        if not batch:
            return
        self.jobs += 1
        job = asyncio.ensure_future(self.runner.run(self.many, [args for args, _ in batch]))
        job.add_done_callback(partial(_settle_all, batch))


def _settle_all(batch: list, job: asyncio.Future) -> None:
    if job.cancelled():  # the loop is shutting down
        for _, future in batch:
            future.cancel()
        return
    error = job.exception()
    results = [None] * len(batch) if error is not None else job.result()
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # its caller went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
