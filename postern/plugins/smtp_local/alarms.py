"""Deadlines for blocking SMTP calls, all kept by one thread.

A relay or direct-delivery attempt arms an alarm that shuts its socket down if the
attempt outlives its deadline (``pool.cut_off``). A ``threading.Timer`` per attempt
costs a thread start and join per message: a fifth of direct delivery's time when it
was measured (bench/outbound_delivery.py). Here one daemon thread sleeps until the
earliest deadline; cancelling only marks the alarm, which the thread then skips.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("postern.send")


class Alarm:
    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]):
        self.when, self.fn, self.cancelled = when, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Alarms:
    def __init__(self):
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._pid = 0  # the process whose thread serves the heap (a fork has none)

    def arm(self, seconds: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn`` (on the alarms thread) in ``seconds`` unless cancelled first."""
        alarm = Alarm(time.monotonic() + seconds, fn)
        with self._wake:
            if self._pid != os.getpid():
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="postern-smtp-alarms", daemon=True).start()
            heapq.heappush(self._heap, (alarm.when, next(self._order), alarm))
            if self._heap[0][2] is alarm:
                self._wake.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)  # drop it now: it may be far off
                        continue
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, alarm = heapq.heappop(self._heap)
            if not alarm.cancelled:
                try:
                    alarm.fn()
                except Exception:  # an alarm must never stop the others
                    log.exception("an SMTP deadline's alarm failed")


#: The process's alarms.
ALARMS = Alarms()
