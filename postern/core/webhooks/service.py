"""The dispatcher loop that ``postern serve`` supervises (plugin ``webhooks``).

Up to ``webhooks.concurrency`` attempts run at once on a thread pool; the main
thread alone touches the database (claims and results). It sleeps in ``select`` on
the wake-up listener and on a pipe the workers write when an attempt finishes, so it
reacts at once to new deliveries and free slots, and otherwise wakes when the next
retry falls due (at least every ``IDLE_RECHECK`` seconds, for lost rings).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import peewee

from postern.core import bell
from postern.core.db import database
from postern.core.models import utcnow
from postern.core.webhooks import dispatch, wake

log = logging.getLogger("postern.webhooks")

IDLE_RECHECK = 5.0
ERROR_PAUSE = 2.0


class Dispatcher:
    def __init__(self, postern):
        self.postern = postern
        self.config = postern.config.webhooks
        self.stop = threading.Event()
        self.inflight: dict[Future, dispatch.Claimed] = {}
        self.rung = True  # sweep once at start
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        self.pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="postern-webhook")

    def run(self) -> None:
        listener = bell.Listener(wake.CHANNEL, self.postern.config.database_url)
        log.info("webhook dispatcher running: %s at once", self.config.concurrency)
        try:
            while not self.stop.is_set():
                try:
                    with database.connection_context():
                        timeout = self._step()
                except peewee.PeeweeException as exc:
                    log.warning("webhook dispatcher: database error (%s); retrying in %ss", exc, ERROR_PAUSE)
                    timeout = ERROR_PAUSE
                ready = listener.wait(timeout, also=[self.pipe_r])
                self.rung = self.rung or listener in ready
                if self.pipe_r in ready:
                    self._drain_pipe()
        finally:
            listener.close()
            self.pool.shutdown(wait=True)  # attempts in flight finish, and are recorded below
            if self.inflight:
                with database.connection_context():
                    dispatch.record_all(self.postern, [(a, f.result()) for f, a in self.inflight.items()])
            os.close(self.pipe_r)
            os.close(self.pipe_w)

    def _step(self) -> float:
        """Record finished attempts, claim more; return how long to sleep."""
        done = [(self.inflight.pop(f), f.result()) for f in [f for f in self.inflight if f.done()]]
        if done:
            dispatch.record_all(self.postern, done)
        free = self.config.concurrency - len(self.inflight)
        # Claiming takes the write lock, so without a ring read first whether anything is due.
        # After a ring claim at once: on SQLite the ring comes before the queuing commit,
        # which a read would not see yet but the claim waits for.
        rung, self.rung = self.rung, False
        due = None if rung else dispatch.next_due(self.postern)
        if free > 0 and (rung or (due is not None and due <= utcnow())) and not self.stop.is_set():
            for attempt in dispatch.claim(self.postern, free):
                future = self.pool.submit(
                    dispatch.send, attempt, self.config.timeout_seconds, self.config.allow_destinations
                )
                self.inflight[future] = attempt
                future.add_done_callback(self._finished)
            if len(self.inflight) >= self.config.concurrency:
                return IDLE_RECHECK  # full: a finishing attempt wakes us
        due = dispatch.next_due(self.postern)
        if due is None:
            return IDLE_RECHECK
        return min(IDLE_RECHECK, max(0.0, (due - utcnow()).total_seconds()))

    def _finished(self, _future) -> None:
        try:
            os.write(self.pipe_w, b"1")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.pipe_r, 4096):
                pass
        except BlockingIOError:
            return


def run_dispatcher(postern) -> None:
    dispatcher = Dispatcher(postern)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop.set() or os.write(dispatcher.pipe_w, b"1"))
    dispatcher.run()
