"""Waking the webhook dispatchers as soon as a delivery is queued.

Like the mail doorbell (postern.core.doorbell), a ring carries no data: a woken
dispatcher reads the queue, and also sweeps it on a timer, so a lost ring costs
latency, never a delivery.
- PostgreSQL: ``NOTIFY postern_webhooks`` inside the queuing transaction, delivered
  at COMMIT to every listening dispatcher on every host.
- SQLite: a datagram to each dispatcher's Unix socket, sent inside the transaction.
  That is early on purpose and safe: the woken dispatcher claims under
  ``BEGIN IMMEDIATE``, which waits for the queuing transaction's write lock, so it
  sees the new rows as soon as they commit (or none, if they roll back).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import socket
from pathlib import Path

from postern.core.db import database, is_postgres
from postern.core.doorbell import socket_dir

log = logging.getLogger("postern.webhooks")

CHANNEL = "postern_webhooks"


def wake_dir(data_dir: Path) -> Path:
    mail = socket_dir(data_dir)
    return mail.with_name(mail.name + "-webhooks")


def ring_in_transaction(data_dir: Path) -> None:
    if is_postgres():
        database.execute_sql("SELECT pg_notify(%s, '')", (CHANNEL,))
        return
    directory = wake_dir(data_dir)
    if not directory.is_dir():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in directory.glob("*.sock"):
            try:
                sock.sendto(b"1", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a dispatcher that died without cleaning up
            except BlockingIOError:
                pass  # its queue is full of rings already: it will look anyway


class Listener:
    """A dispatcher's end: ``fileno()`` for select(), ``drain()`` after it fires.

    On PostgreSQL the LISTEN connection can be missing at start or die later (a
    restart, a failover, a cut link). That must not stop the dispatcher: each ``wait``
    tries to listen again, and the first wait that succeeds reports itself as rung so
    the dispatcher sweeps for whatever was queued while no ring could arrive."""

    def __init__(self, data_dir: Path, database_url: str):
        self._pg = None
        self._sock = None
        self.path = None
        self._pg_url = None
        if database_url.startswith(("postgres://", "postgresql://")):
            self._pg_url = database_url.replace("postgres://", "postgresql://", 1)
            self._listen()  # without the database now, the first wait tries again
        else:
            directory = wake_dir(data_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(str(self.path))
            self._sock.setblocking(False)

    def _listen(self) -> None:
        import psycopg2
        import psycopg2.extensions

        try:
            conn = psycopg2.connect(self._pg_url)
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            conn.cursor().execute(f"LISTEN {CHANNEL}")
        except psycopg2.Error as exc:
            log.warning("webhook wake-up: cannot LISTEN (%s); sweeping on the timer until it can", exc)
            return
        self._pg = conn

    def fileno(self) -> int:
        return self._pg.fileno() if self._pg is not None else self._sock.fileno()

    def wait(self, timeout: float, also=()) -> list:
        """Block until a ring, one of ``also`` is readable, or ``timeout``; returns what fired."""
        if self._pg_url is not None and self._pg is None:
            self._listen()
            if self._pg is not None:
                return [self]  # listening again: sweep for what was queued meanwhile
            ready, _, _ = select.select(list(also), [], [], max(0.0, timeout))
            return ready
        ready, _, _ = select.select([self, *also], [], [], max(0.0, timeout))
        if self in ready:
            self.drain()
        return ready

    def drain(self) -> None:
        if self._pg is not None:
            import psycopg2

            try:
                self._pg.poll()
            except psycopg2.Error as exc:
                log.warning("webhook wake-up connection lost (%s); listening again on the next wait", exc)
                with contextlib.suppress(psycopg2.Error):
                    self._pg.close()
                self._pg = None
                return
            self._pg.notifies.clear()
            return
        while True:
            try:
                self._sock.recv(64)
            except BlockingIOError:
                return

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
