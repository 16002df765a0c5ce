"""Delivery cursors: what a wait without ``after`` has already handed each agent.

One row per agent and inbox holds the ``seq`` of the last message given to that agent
(none yet: 0, the position before an inbox's first message). A wait reads from there and
then *claims* what it read by compare-and-swap, ``UPDATE … WHERE delivered_seq = old``:
of two waits of one agent that read the same messages, one moves the cursor and returns
them, the other finds the cursor moved, reads on from the new position and so returns
neither a message the first returned nor skips one after it. Plain SQL that SQLite and
PostgreSQL both run; no lock is held while a wait sleeps.
"""

from __future__ import annotations

from typing import NamedTuple

from postern.core import fastsql
from postern.core.models import DeliveryCursor, utcnow


class Claim(NamedTuple):
    won: bool  #: this call moved the cursor: the messages it read are its to return
    seq: int  #: the cursor's position after the call


def position(agent_id: str, inbox_id: str) -> int:
    """The ``seq`` of the last message handed to this agent from this inbox (0: none)."""
    row = fastsql.select_one(
        DeliveryCursor, (DeliveryCursor.delivered_seq,), "WHERE agent_id = ? AND inbox_id = ?", (agent_id, inbox_id)
    )
    return row.delivered_seq if row is not None else 0


def claim(agent_id: str, inbox_id: str, old: int, new: int) -> Claim:
    """Move the cursor from ``old`` to ``new`` if it is still at ``old``."""
    moved = fastsql.execute(
        "UPDATE delivery_cursor SET delivered_seq = ?, updated_at = ? "
        "WHERE agent_id = ? AND inbox_id = ? AND delivered_seq = ?",
        (new, utcnow(), agent_id, inbox_id, old),
    ).rowcount
    if not moved and old == 0:
        # No row yet stands for 0. ON CONFLICT DO NOTHING (SQLite 3.24+, PostgreSQL): a
        # racing first claim that inserted first makes this one lose, never fail.
        moved = fastsql.execute(
            "INSERT INTO delivery_cursor (agent_id, inbox_id, delivered_seq, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (agent_id, inbox_id, new, utcnow()),
        ).rowcount
    if moved:
        return Claim(True, new)
    return Claim(False, position(agent_id, inbox_id))
