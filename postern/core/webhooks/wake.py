"""Waking the webhook dispatchers as soon as a delivery is queued: the bell's
``webhooks`` channel (postern.core.bell).

A ring carries no data: a woken dispatcher reads the queue, and also sweeps it on a
timer, so a lost ring costs latency, never a delivery. The ring is sent inside the
queuing transaction: on PostgreSQL the NOTIFY goes out at COMMIT; on SQLite the
datagram goes at once, early on purpose and safe: the woken dispatcher claims under
``BEGIN IMMEDIATE``, which waits for the queuing transaction's write lock, so it sees
the new rows as soon as they commit (or none, if they roll back).

The dispatcher sleeps in ``bell.Listener(CHANNEL, …).wait`` (a ``select``). On PostgreSQL the LISTEN
connection can be missing at start or die later; each wait then tries to listen again,
and a wait that does reports itself as rung so the dispatcher sweeps for whatever was
queued while no ring could arrive.
"""

from __future__ import annotations

from postern.core import bell

CHANNEL = "webhooks"


def ring_in_transaction() -> None:
    bell.ring(CHANNEL)
