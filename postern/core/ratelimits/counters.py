"""Fixed-window counters shared by every worker: where the rate limiter counts.

``charge`` adds to several counters at once, all or none: when any would pass its
limit, nothing stays added (a refused request costs no quota, so an agent refused by
its own limit cannot drain its customer's). Each charge is one upsert, and the
database makes it exact across processes: 50 requests racing for the last 20 places
get exactly 20 (tests/test_limits.py). Counters are
not mail: losing them in a crash only gives clients a fresh window, so SQLite keeps
them in a file of their own without fsync (and out of the main database's write
lock), and PostgreSQL in an UNLOGGED table; bench/limits_storage.py measured the
choice (docs/design.md, "Rate limits").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import peewee

from postern.core.db import database

log = logging.getLogger("postern.limits")


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, peewee.PeeweeException, OSError)
    try:
        import psycopg2
    except ImportError:
        return errors
    return (*errors, psycopg2.Error)


#: What a counter store raises when it cannot be reached or written (SQLite, PostgreSQL).
STORE_ERRORS = _store_errors()

#: Rows of windows that ended this long ago are deleted (a day's window plus margin).
KEEP_SECONDS = 2 * 86400
#: Charges per process between two sweeps of ended windows.
SWEEP_EVERY = 5000

_UPSERT = (
    "INSERT INTO rate_counter (key, window_start, hits) VALUES {values} "
    "ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_counter.hits + excluded.hits "
    "RETURNING key, hits"
)
_CREATE = (
    "CREATE TABLE IF NOT EXISTS rate_counter ("
    "key TEXT NOT NULL, window_start BIGINT NOT NULL, hits INTEGER NOT NULL, "
    "PRIMARY KEY (key, window_start))"
)


class Counters:
    """One store of counters. ``entries`` are ``(key, window_start, limit, amount)``:
    a request adds 1, a send adds its recipients to a recipients counter."""

    def charge(self, entries: list[tuple[str, int, int]], gate=None) -> tuple[bool, dict[str, int]]:
        """Add each amount to its counter unless one would pass its limit, or the ``gate``
        counter ``(key, window_start, limit)`` already reached its limit (a client
        address locked out by failed sign-ins); return whether it was added and each
        counter's count (as it now is, or would have become)."""
        raise NotImplementedError

    def add(self, key: str, window_start: int) -> int:
        """Add one whatever the count (failed sign-ins); return the new count."""
        raise NotImplementedError

    def count(self, key: str, window_start: int) -> int:
        raise NotImplementedError


class _SqlCounters(Counters):
    """The statements, over an autocommit DB-API connection ``_connection()`` with
    ``param`` style. A charge is one statement (the write lock is held only inside
    it); a refused one is undone by a second, so only refusals pay twice. Between the
    two, a concurrent request may see the refused amount and be refused too: at a
    limit's edge the counters err towards refusing, never towards letting more
    through. bench/limits_overhead.py measured a transaction around the check
    instead: both workers' threads queued on SQLite's lock for its whole length."""

    param = "?"

    def __init__(self):
        self._charges = 0
        self._lock = threading.Lock()

    def charge(self, entries, gate=None):
        entries = sorted(entries)  # one lock order for every statement: no deadlock on PostgreSQL
        cursor = self._connection().cursor()
        if gate is not None and (hits := self._count(cursor, gate[0], gate[1])) >= gate[2]:
            raise _Refused({gate[0]: hits})
        if not entries:
            return True, {}
        values = ", ".join(f"({self.param}, {self.param}, {self.param})" for _ in entries)
        cursor.execute(_UPSERT.format(values=values), [p for key, window, _, n in entries for p in (key, window, n)])
        counts = dict(cursor.fetchall())
        if any(counts[key] > limit for key, _, limit, _ in entries):
            cursor.executemany(
                f"UPDATE rate_counter SET hits = hits - {self.param} "
                f"WHERE key = {self.param} AND window_start = {self.param}",
                [(n, key, window) for key, window, _, n in entries],
            )
            raise _Refused(counts)
        self._maybe_sweep(min(window for _, window, _, _ in entries))
        return True, counts

    def add(self, key, window_start):
        cursor = self._connection().cursor()
        cursor.execute(_UPSERT.format(values=f"({self.param}, {self.param}, 1)"), (key, window_start))
        return cursor.fetchone()[1]

    def count(self, key, window_start):
        return self._count(self._connection().cursor(), key, window_start)

    def _count(self, cursor, key, window_start) -> int:
        cursor.execute(
            f"SELECT hits FROM rate_counter WHERE key = {self.param} AND window_start = {self.param}",
            (key, window_start),
        )
        row = cursor.fetchone()
        return row[0] if row else 0

    def _maybe_sweep(self, now_window: int) -> None:
        with self._lock:
            self._charges += 1
            due = self._charges % SWEEP_EVERY == 0
        if due:
            self._connection().cursor().execute(
                f"DELETE FROM rate_counter WHERE window_start < {self.param}", (now_window - KEEP_SECONDS,)
            )

    def _connection(self):
        raise NotImplementedError


class _Refused(Exception):
    def __init__(self, counts):
        self.counts = counts


class SqliteCounters(_SqlCounters):
    """Counters in their own SQLite file (made on first use): WAL, ``synchronous=OFF``,
    one autocommit connection per thread."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._local = threading.local()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = self._open()
            except sqlite3.DatabaseError:
                # Without fsync an OS crash can leave the file damaged; its counts are
                # only worth a fresh window, so start a new file rather than fail requests.
                log.warning("rate-limit counters in %s are unreadable; starting them afresh", self.path)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                connection = self._open()
            self._local.connection = connection
        return connection

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute(_CREATE)  # made on first use, beside the database
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection


class PostgresCounters(_SqlCounters):
    """Counters in the UNLOGGED table ``rate_counter`` of Postern's database (m0023),
    on the connection the thread already holds."""

    param = "%s"

    def _connection(self):
        # The charge commits by itself, so it must never run inside a peewee transaction
        # (its COMMIT would end that transaction early): callers charge before acting.
        if database.in_transaction():
            raise RuntimeError("a rate-limit charge must not run inside a transaction")
        return database.connection()


def charge(counters: Counters, entries, gate=None) -> tuple[bool, dict[str, int]]:
    """``counters.charge`` with a refusal as ``(False, counts)`` rather than an exception."""
    try:
        return counters.charge(entries, gate)
    except _Refused as refused:
        return False, refused.counts


class MemoryCounters(Counters):
    """Counters in this process only: exact with one worker (tests, a laptop)."""

    def __init__(self):
        self._hits: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def charge(self, entries, gate=None):
        with self._lock:
            if gate is not None and (hits := self._hits.get((gate[0], gate[1]), 0)) >= gate[2]:
                raise _Refused({gate[0]: hits})
            counts = {key: self._hits.get((key, window), 0) + amount for key, window, _, amount in entries}
            if any(counts[key] > limit for key, _, limit, _ in entries):
                raise _Refused(counts)
            for key, window, _, _ in entries:
                self._hits[(key, window)] = counts[key]
            if len(self._hits) > 100_000:  # drop windows long over
                newest = max(window for _, window in self._hits)
                self._hits = {k: v for k, v in self._hits.items() if k[1] >= newest - KEEP_SECONDS}
            return True, counts

    def add(self, key, window_start):
        with self._lock:
            self._hits[(key, window_start)] = self._hits.get((key, window_start), 0) + 1
            return self._hits[(key, window_start)]

    def count(self, key, window_start):
        with self._lock:
            return self._hits.get((key, window_start), 0)
