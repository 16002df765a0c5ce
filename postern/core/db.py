"""The database: one peewee ``DatabaseProxy`` initialised from a URL.

``sqlite:///path`` (the embedded default) runs in WAL mode with foreign keys on and a
busy timeout; ``postgresql://…`` is the path to several hosts. Models bind to
``database``; each process calls ``open_database(url)`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import connect

database = peewee.DatabaseProxy()

SQLITE_BUSY_TIMEOUT_MS = 5000


class DatabaseConfigError(Exception):
    """The database URL cannot be used."""


def open_database(url: str, sqlite_synchronous: str = "full") -> peewee.Database:
    """Connect ``database`` to ``url`` and return the concrete database."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = peewee.SqliteDatabase(
            path or ":memory:",
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "synchronous": sqlite_synchronous.upper(),
            },
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
    elif scheme in ("postgres", "postgresql"):
        try:
            import psycopg2  # noqa: F401  (only to name the extra when missing)
        except ImportError:
            raise DatabaseConfigError(
                "PostgreSQL needs the 'postgres' extra: pip install 'postern[postgres]'"
            ) from None
        db = connect(url.replace("postgres://", "postgresql://", 1))
    else:
        raise DatabaseConfigError(f"database.url: unsupported scheme '{scheme}' (use sqlite:/// or postgresql://)")
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


class DatabaseRunner:
    """Runs blocking database work off the event loop, on a bounded thread pool.

    peewee keeps one connection per thread, so each pool thread reuses its own
    connection instead of opening one per request.
    """

    def __init__(self, threads: int):
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn, /, *args, **kwargs):
        if self._pool is None:  # first use, or used again after an ASGI lifespan shutdown
            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="postern-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(_in_connection, fn, *args, **kwargs))

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _in_connection(fn, *args, **kwargs):
    db = database.obj
    if db.is_closed():
        db.connect(reuse_if_open=True)
    try:
        return fn(*args, **kwargs)
    except peewee.InterfaceError:
        # A dropped server connection: reconnect once for the next call.
        db.close()
        raise


# One SQLite writer at a time per process, queued on a Python lock. SQLite's own busy
# handler polls with sleeps of up to 100 ms, so threads of one worker that collide on
# BEGIN IMMEDIATE (every request writes an audit row) would otherwise wait far longer
# than the write they queue behind. Other processes still meet the busy handler.
_sqlite_writer = threading.RLock()


@contextlib.contextmanager
def write_transaction():
    """A transaction that takes the write lock up front.

    On SQLite, BEGIN IMMEDIATE makes concurrent writers queue instead of failing to
    upgrade a read lock; PostgreSQL's row locks do the same job inside an ordinary
    transaction.
    """
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        with _sqlite_writer, db.atomic("IMMEDIATE"):
            yield
    else:
        with db.atomic():
            yield
