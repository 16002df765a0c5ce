"""The database: one peewee ``DatabaseProxy`` initialised from a URL.

``sqlite:///path`` (the embedded default) runs in WAL mode with foreign keys on and a
busy timeout; ``postgresql://…`` is the path to several hosts. Models bind to
``database``; each process calls ``open_database(url)`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import queue
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import connect, parse

from postern.core.errors import SetupError

database = peewee.DatabaseProxy()
log = logging.getLogger("postern.db")

SQLITE_BUSY_TIMEOUT_MS = 5000
PG_LOCK_TIMEOUT_MS = 5000
# libpq connection settings, each unless the URL sets it. Without keepalives a link that
# drops silently (no RST: a NAT or firewall forgetting the flow) is noticed only after the
# kernel's defaults, about two hours idle; without a user timeout a request unacknowledged
# on a dead link is retransmitted for about 15 minutes. Here: about a minute for each.
PG_CONNECT_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60000,  # ms
}


class DatabaseConfigError(SetupError):
    """The database URL cannot be used."""


def open_database(url: str, sqlite_synchronous: str = "full") -> peewee.Database:
    """Connect ``database`` to ``url`` and return the concrete database."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseConfigError(
                    f"cannot create {Path(path).parent}, the directory of the SQLite database "
                    f"({exc.strerror}): fix data_dir / database.url, or the permissions on its parent"
                ) from None
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
        url = url.replace("postgres://", "postgresql://", 1)
        # Bound lock waits as SQLite's busy timeout does: a table locked by someone else
        # (a long migration, a manual LOCK TABLE) gives "try again later" after
        # PG_LOCK_TIMEOUT_MS instead of holding a request, an SMTP session and a pool
        # thread forever. Options in the URL come after ours and win.
        given = parse(url)
        options = f"-c lock_timeout={PG_LOCK_TIMEOUT_MS} {given.get('options', '')}".strip()
        defaults = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in given}
        db = connect(url, options=options, **defaults)
    else:
        raise DatabaseConfigError(f"database.url: unsupported scheme '{scheme}' (use sqlite:/// or postgresql://)")
    previous = database.obj
    if previous is not None and not previous.is_closed():
        # Opened again (a command that checks, then serves): this thread's connection to
        # the database being replaced would otherwise stay open until garbage collection.
        with contextlib.suppress(peewee.PeeweeException):
            previous.close()
    database.initialize(db)
    return db


# Faults of the database itself, as opposed to bugs: the caller should answer "try
# again later" (SMTP 4xx, HTTP 503) instead of a 500 or a 5xx refusal.
FAULT_UNAVAILABLE = "database_unavailable"
FAULT_FULL = "storage_full"
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full" (disk, quota or max_page_count)
# BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL. SQLITE_ERROR ("no such
# table", a syntax error) is a bug or a missing migration, not something a retry fixes.
_SQLITE_FAULTS = {5, 6, 7, 8, 10, 13, 14, 15}
_PG_DISK_FULL = "53100"


class Fault(NamedTuple):
    kind: str  # FAULT_UNAVAILABLE or FAULT_FULL
    error: BaseException  # the database's own error, for the log


def database_fault(exc: BaseException) -> Fault | None:
    """What kind of database fault ``exc`` is, or ``None`` when it is none (an integrity
    error or a bug stays what it is).

    Locked (SQLite busy timeout, PostgreSQL ``lock_timeout``), unreachable, a dropped
    connection and I/O errors are all peewee ``OperationalError``/``InterfaceError``;
    peewee keeps the driver's exception as ``orig``. The exception's context is looked
    at too: when SQLite runs out of space it rolls the transaction back itself, and
    peewee's own ROLLBACK then fails with "no transaction is active", hiding the cause.
    """
    seen = 0
    while exc is not None and seen < 5:
        kind = _fault_kind_of(exc)
        if kind is not None:
            return Fault(kind, exc)
        exc, seen = exc.__context__, seen + 1
    return None


def _fault_kind_of(exc: BaseException) -> str | None:
    if not isinstance(exc, peewee.OperationalError | peewee.InterfaceError):
        return None
    cause = getattr(exc, "orig", None)
    sqlite_code = getattr(cause, "sqlite_errorcode", None)
    if sqlite_code is not None:
        sqlite_code &= 0xFF  # the primary code of an extended one (SQLITE_IOERR_WRITE, …)
        if sqlite_code == _SQLITE_FULL:
            return FAULT_FULL
        return FAULT_UNAVAILABLE if sqlite_code in _SQLITE_FAULTS else None
    if getattr(cause, "pgcode", None) == _PG_DISK_FULL:
        return FAULT_FULL
    return FAULT_UNAVAILABLE


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
        self._on_shutdown: list = []
        # Each pool thread's connection, closed at shutdown: a finished thread's
        # thread-local connection is only freed when the garbage collector gets to it,
        # and on PostgreSQL those idle leftovers count against max_connections.
        self._connections: dict[int, object] = {}

    def on_shutdown(self, fn) -> None:
        """Call ``fn`` when the runner shuts down (e.g. a ``GroupCommitter`` beside it)."""
        self._on_shutdown.append(fn)

    async def run(self, fn, /, *args, **kwargs):
        if self._pool is None:  # first use, or used again after an ASGI lifespan shutdown
            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="postern-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._in_connection, fn, *args, **kwargs))

    def _in_connection(self, fn, *args, **kwargs):
        db = database.obj
        _drop_if_stale(db)
        if db.is_closed():
            db.connect(reuse_if_open=True)
            self._connections[threading.get_ident()] = db.connection()
        return _run_guarded(db, fn, *args, **kwargs)

    def shutdown(self) -> None:
        for fn in self._on_shutdown:
            fn()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        connections, self._connections = self._connections, {}
        for conn in connections.values():  # its thread has ended: nobody else uses it
            with contextlib.suppress(Exception):
                conn.close()


def _in_connection(fn, *args, **kwargs):
    """Run ``fn`` on this thread's connection, opened (or replaced when stale) first."""
    db = database.obj
    _drop_if_stale(db)
    if db.is_closed():
        db.connect(reuse_if_open=True)
    return _run_guarded(db, fn, *args, **kwargs)


def _run_guarded(db: peewee.Database, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (peewee.OperationalError, peewee.InterfaceError):
        _drop_if_broken(db)
        raise


def _drop_if_stale(db: peewee.Database) -> None:
    """Before handing out a kept PostgreSQL connection, make sure the server has not
    closed it meanwhile (a restart, a failover, ``pg_terminate_backend``, a cut link).
    An idle connection has nothing to read; if its socket is readable, the server sent
    its goodbye or the link was reset, and the connection is replaced. One ``select``
    with no round trip; a link that died without a word is caught by ``_drop_if_broken``
    after the failing call instead."""
    conn = db._state.conn
    if conn is None or not isinstance(db, peewee.PostgresqlDatabase) or db.in_transaction():
        return
    try:
        readable = conn.closed or select.select([conn.fileno()], [], [], 0)[0]
    except Exception:  # noqa: BLE001 (no usable socket: the driver's InterfaceError, OSError)
        readable = True
    if readable:
        try:
            db.close()
        except peewee.PeeweeException:
            db._state.reset()


def _drop_if_broken(db: peewee.Database) -> None:
    """Close this thread's connection if the server side of it is gone, so the next call
    on the thread connects afresh instead of failing on a dead socket: the first request
    after an outage then works. psycopg2 marks such a connection ``closed`` (nonzero)."""
    conn = db._state.conn
    if conn is None or not getattr(conn, "closed", 0):
        return
    try:
        db.close()
    except peewee.PeeweeException:  # a transaction still marked open on a dead link
        db._state.reset()


class _SqliteWriterLock:
    """One SQLite writer at a time across this host's processes, queued on locks that
    wake a waiter the moment the holder lets go.

    SQLite's own busy handler polls with sleeps of up to 100 ms, so two writers that
    collide on BEGIN IMMEDIATE (every API request writes an audit row; every listener
    process commits mail) would wait far longer than the write they queue behind.
    Threads of one process queue on a Python lock, processes on ``flock`` of a file
    beside the database. The file lock is tried without blocking and then at short
    intervals: a blocking ``flock`` cannot time out, and a writer must still give up
    after the busy timeout (503, SMTP 451) when a holder hangs. Processes that do not
    take the file lock (the ``sqlite3`` shell, another program) still meet the busy
    handler."""

    def __init__(self):
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._owner: tuple[int, str] | None = None

    @contextlib.contextmanager
    def held(self, path: str):
        with self._threads:
            if self._depth == 0 and path and path != ":memory:":
                self._acquire(path)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _acquire(self, path: str) -> None:
        # Opened per process: a descriptor inherited over fork shares its lock with the parent.
        if self._owner != (os.getpid(), path):
            if self._fd is not None and self._owner[0] == os.getpid():
                os.close(self._fd)  # this process moved to another database (tests do)
            self._fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._owner = (os.getpid(), path)
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise peewee.OperationalError("database is locked (by another writer process)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)


_sqlite_writer = _SqliteWriterLock()


@contextlib.contextmanager
def write_transaction():
    """A transaction that takes the write lock up front.

    On SQLite, BEGIN IMMEDIATE makes concurrent writers queue instead of failing to
    upgrade a read lock; PostgreSQL's row locks do the same job inside an ordinary
    transaction.
    """
    db = database.obj
    outermost = not db.in_transaction()
    if isinstance(db, peewee.SqliteDatabase):
        with _sqlite_writer.held(db.database), db.atomic("IMMEDIATE"):
            yield
            if outermost:
                _run_write_hooks()
    else:
        with db.atomic():
            yield
            if outermost:
                _run_write_hooks()


_write_hooks = threading.local()


def on_next_write(fn) -> None:
    """Run ``fn()`` at the end of this thread's next write transaction, inside it, if
    that transaction commits: an API call is counted in the usage ledger with the action
    it made (postern/api/calls.py), at the end so a row lock on PostgreSQL is held only
    for the commit. ``take_write_hooks`` collects what no transaction ran."""
    hooks = getattr(_write_hooks, "pending", None)
    if hooks is None:
        hooks = _write_hooks.pending = []
    hooks.append(fn)


def take_write_hooks() -> list:
    """Remove and return the hooks no write transaction has run yet."""
    hooks = getattr(_write_hooks, "pending", None) or []
    _write_hooks.pending = None
    return hooks


def _run_write_hooks() -> None:
    for fn in take_write_hooks():
        fn()


class GroupCommitter:
    """Runs write jobs submitted by many coroutines on one thread, in shared
    transactions: every job queued while a commit is under way goes into the next
    transaction, so N concurrent writers cost one commit (one fsync) instead of N.

    Each job runs in a savepoint of its own: a job that raises is rolled back alone
    and its caller gets the exception; the others commit. A caller is answered only
    after the commit, with ``after(result)`` (run on the writer thread once the
    commit succeeded) already done, so an SMTP 250 still means durably stored. If
    the commit itself fails, every job of the batch gets that error.
    """

    def __init__(self, max_batch: int = 64, transaction=None):
        self.max_batch = max_batch
        self._transaction = transaction or write_transaction
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.commits = 0  # transactions committed, for the benchmark and tests

    async def run(self, fn, *args, after=None):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_thread()
        self._jobs.put((fn, args, after, loop, future))
        return await future

    def shutdown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="postern-group-commit", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
            try:
                outcomes = _in_connection(self._commit, batch)
            except Exception as exc:  # noqa: BLE001 (no connection: every caller hears why)
                outcomes = [(False, exc)] * len(batch)
            for (_, _, _, loop, future), outcome in zip(batch, outcomes, strict=True):
                ok, value = outcome
                loop.call_soon_threadsafe(_settle, future, ok, value)
        database.close()

    def _commit(self, batch) -> list[tuple[bool, object]]:
        outcomes: list[tuple[bool, object]] = []
        try:
            with self._transaction():
                for fn, args, _, _, _ in batch:
                    try:
                        with database.atomic():  # a savepoint: a failing job takes only itself back
                            outcomes.append((True, fn(*args)))
                    except Exception as exc:  # noqa: BLE001 (handed to that job's caller)
                        outcomes.append((False, exc))
        except Exception as exc:  # noqa: BLE001 (the commit failed: nothing of the batch is stored)
            _drop_if_broken(database.obj)  # the next batch reconnects if the link died
            return [(False, exc)] * len(batch)
        self.commits += 1
        for i, (ok, value) in enumerate(outcomes):
            after = batch[i][2]
            if ok and after is not None:
                try:
                    after(value)
                except Exception as exc:  # stored and committed: the caller must still be told so
                    log.exception("after-commit step failed: %s", exc)
        return outcomes


def _settle(future: asyncio.Future, ok: bool, value) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
