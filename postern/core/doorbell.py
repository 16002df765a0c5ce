"""Cross-process wake-ups for ``wait_for_email``: a doorbell, never the data itself.

A waiter always reads the store; a ring only says "look again". Rings travel:
- on PostgreSQL as ``NOTIFY postern_mail, '<inbox id>'`` issued inside the ingest
  transaction, so it is delivered exactly when the message becomes visible, to every
  listening worker on every host;
- on SQLite (one host by nature) as a datagram to each API worker's Unix socket in
  ``<data_dir>/run/doorbell/``, sent right after the commit.
A lost ring costs latency, not mail: waiters also re-read the store every
``SAFETY_RECHECK`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
from collections import defaultdict
from pathlib import Path

from postern.core.db import database, is_postgres

log = logging.getLogger("postern.doorbell")

CHANNEL = "postern_mail"
SAFETY_RECHECK = 15.0
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


def ring_in_transaction(inbox_ids) -> None:
    """Call inside the committing transaction (PostgreSQL delivers at COMMIT)."""
    if is_postgres():
        for inbox_id in set(inbox_ids):
            database.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, inbox_id))


def ring_after_commit(data_dir: Path, inbox_ids) -> None:
    """Call after the commit: wake SQLite-mode workers on this host."""
    if is_postgres():
        return
    payload = " ".join(sorted(set(inbox_ids))).encode()
    directory = socket_dir(data_dir)
    if not directory.is_dir():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in directory.glob("*.sock"):
            try:
                sock.sendto(payload, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a worker that died without cleaning up
            except BlockingIOError:
                log.debug("doorbell %s is full; its waiters will re-check on their own", path.name)


def socket_dir(data_dir: Path) -> Path:
    preferred = Path(data_dir) / "run" / "doorbell"
    if len(str(preferred)) + 30 <= MAX_SOCKET_PATH:
        return preferred
    # A deep data_dir would overflow sun_path: use a short directory keyed by it.
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"postern-{digest}"


class Waiters:
    """This worker's parked waiters, by inbox, and the listener that wakes them."""

    def __init__(self, data_dir: Path, database_url: str):
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = None
        #: Rings seen per inbox. A store read tagged with generation g reflects every
        #: commit whose ring arrived before it started.
        self._generation: dict[str, int] = defaultdict(int)
        self._reads: dict[tuple, tuple[int, asyncio.Future]] = {}

    def subscribe(self, inbox_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[inbox_id].add(event)
        return event

    def generation(self, inbox_id: str) -> int:
        return self._generation.get(inbox_id, 0)

    async def read_shared(self, inbox_id: str, key: tuple, since: int, make):
        """Run ``make()`` once for all waiters woken together on the same ``key``.

        A waiter that cleared its event at generation ``since`` may share a read that
        started at that generation or later: any commit the read could miss rings
        after the waiter cleared its event, so the waiter looks again.
        """
        found = self._reads.get(key)
        if found is None or found[0] < since:
            future = asyncio.ensure_future(make())
            found = (self.generation(inbox_id), future)
            self._reads[key] = found
            future.add_done_callback(lambda _, key=key, found=found: self._forget(key, found))
        return await asyncio.shield(found[1])

    def _forget(self, key, found) -> None:
        if self._reads.get(key) is found:
            del self._reads[key]

    def unsubscribe(self, inbox_id: str, event: asyncio.Event) -> None:
        events = self._events.get(inbox_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[inbox_id]

    def wake(self, inbox_id: str) -> None:
        self._generation[inbox_id] += 1
        for event in self._events.get(inbox_id, ()):
            event.set()

    def wake_all(self) -> None:
        for inbox_id in list(self._events):
            self.wake(inbox_id)

    def waiting(self) -> int:
        return sum(len(events) for events in self._events.values())

    def ensure_listening(self) -> None:
        """Start this process's listener on first use, inside the running loop."""
        if self._listener is None or not self._listener.alive:
            factory = PgListener if self.database_url.startswith(("postgres://", "postgresql://")) else UnixListener
            try:
                self._listener = factory(self)
            except OSError as exc:
                log.warning("doorbell listener failed to start (%s); waiters fall back to re-checking", exc)
                self._listener = None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class UnixListener:
    def __init__(self, waiters: Waiters):
        self.waiters = waiters
        directory = socket_dir(waiters.data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self.alive = True

    def _readable(self) -> None:
        while True:
            try:
                payload = self.sock.recv(65536)
            except BlockingIOError:
                return
            for inbox_id in payload.decode(errors="replace").split():
                self.waiters.wake(inbox_id)

    def close(self) -> None:
        self.alive = False
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PgListener:
    def __init__(self, waiters: Waiters):
        import psycopg2
        import psycopg2.extensions

        self.waiters = waiters
        self.conn = psycopg2.connect(waiters.database_url.replace("postgres://", "postgresql://", 1))
        self.conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        self.conn.cursor().execute(f"LISTEN {CHANNEL}")
        self.fd = self.conn.fileno()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._readable)
        self.alive = True

    def _readable(self) -> None:
        import psycopg2

        try:
            self.conn.poll()
        except psycopg2.Error as exc:
            log.warning("doorbell connection lost (%s); reconnecting on the next wait", exc)
            self.close()
            self.waiters.wake_all()
            return
        while self.conn.notifies:
            self.waiters.wake(self.conn.notifies.pop(0).payload)

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.fd)
            self.conn.close()
