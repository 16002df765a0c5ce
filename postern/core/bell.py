"""One cross-process bell with named channels: a ring says "look again", never the data.

Users: ``mail`` (parked ``wait_for_email`` calls, postern.core.doorbell), ``dns`` (zone
caches, postern.core.zonebell), ``webhooks`` (the dispatcher, postern.core.webhooks.wake);
plugins may ring and listen on channels of their own. A ring carries topics (inbox ids,
zone names; no whitespace); ``ALL`` means "anything on this channel may have changed".

- PostgreSQL: ``NOTIFY postern_<channel>`` (inside the caller's transaction it is sent at
  COMMIT, and not at all on rollback), heard by one LISTEN connection per listener on
  every host. A listener whose connection is lost delivers ``[ALL]`` at once and again
  when it listens again, since rings in between were lost: consumers re-read then.
- SQLite (one host by nature): a datagram to every listener's Unix socket in one private
  directory per database file (0700, sockets 0600, checked to be ours), named
  ``<channel>-<pid>-<random>.sock`` so channels never cross. A ringer unlinks the socket
  of a listener that died; a listener whose socket file vanished binds a new one and
  delivers ``[ALL]``.
A lost ring costs latency, never data: every consumer also re-reads on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import select
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from postern.core.db import PG_CONNECT_DEFAULTS, database, is_postgres

log = logging.getLogger("postern.bell")

ALL = "*"
MAX_PAYLOAD = 7000  # below PostgreSQL's 8000-byte NOTIFY limit; longer rings become ALL
#: How often an asyncio listener checks that it still listens (and retries when not).
RELISTEN_SECONDS = 2.0
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,19}")
_SOCKET_NAME = 44  # "<channel>-<pid>-<8 hex>.sock" and the slash, at most


def pg_channel(channel: str) -> str:
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"a bell channel is [a-z][a-z0-9_]*, at most 20 characters, not {channel!r}")
    return f"postern_{channel}"


def payload_of(topics: Iterable[str]) -> str:
    payload = " ".join(sorted(set(topics)))
    return ALL if not payload or len(payload) > MAX_PAYLOAD else payload


def ring(channel: str, topics: Iterable[str] = ()) -> None:
    """Ring ``channel`` through the open database: NOTIFY on PostgreSQL (at COMMIT when
    called inside a transaction), datagrams sent now on SQLite. Socket trouble is logged,
    never raised: a lost ring costs latency only."""
    payload = payload_of(topics)
    if is_postgres():
        database.execute_sql("SELECT pg_notify(%s, %s)", (pg_channel(channel), payload))
        return
    path = database.obj.database
    if path and path != ":memory:":
        ring_sockets(Path(path), channel, payload)


def socket_dir(db_path: Path) -> Path:
    """The private directory of one SQLite database's listeners, beside the database
    (``<db>-bell``) unless that would overflow sun_path, then a short one keyed by it."""
    db_path = Path(db_path).resolve()
    preferred = Path(f"{db_path}-bell")
    if len(str(preferred)) + _SOCKET_NAME <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(db_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"postern-bell-{digest}"


def _private_dir(directory: Path, create: bool) -> bool:
    """True when ``directory`` is a real directory owned by us, mode 0700 (made so when
    ``create``). Another user's (a squatter in /tmp) is refused: rings would leak topics."""
    if create:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        log.warning("bell: %s is not a directory of this user's; not using it", directory)
        return False
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    return True


def ring_sockets(db_path: Path, channel: str, payload: str) -> None:
    pg_channel(channel)  # validates the name
    directory = socket_dir(db_path)
    if not directory.is_dir() or not _private_dir(directory, create=False):
        return  # nobody listens yet
    data = payload.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in directory.glob(f"{channel}-*.sock"):
            try:
                sock.sendto(data, str(path))
            except ConnectionRefusedError:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its listener died without cleaning up
            except FileNotFoundError:
                pass  # its listener closed meanwhile
            except BlockingIOError:
                log.debug("bell %s is full; its consumer looks anyway", path.name)
            except OSError as exc:
                log.warning("bell: cannot ring %s (%s); its consumer catches up on its timer", path.name, exc)


class Listener:
    """One process's ear on one channel, for a ``select`` loop: ``wait()``, or
    ``fileno()`` + ``read()`` + ``repair()`` (``AsyncListener`` wraps it for asyncio).

    It tries to listen at once, so the consumer's first read comes after the LISTEN and
    no ring falls in between; without the database it never raises, and later calls
    (``wait``, ``repair``) try again."""

    def __init__(self, channel: str, database_url: str):
        self.channel = channel
        self.name = pg_channel(channel)
        self.conn = None
        self.sock: socket.socket | None = None
        self.path: Path | None = None
        self._ino = None
        self.lost = False  # the PostgreSQL connection failed; close it before reconnecting
        self.pg_url = None
        if database_url.startswith(("postgres://", "postgresql://")):
            self.pg_url = database_url.replace("postgres://", "postgresql://", 1)
            self.conn = self.connect()
        else:
            self.db_path = Path(database_url[len("sqlite:///") :])
            self._bind()

    @property
    def listening(self) -> bool:
        return self.sock is not None if self.pg_url is None else self.conn is not None and not self.lost

    def connect(self):
        """A new LISTEN connection, or None (logged) without the database. Thread-safe."""
        import psycopg2
        from psycopg2.extensions import parse_dsn

        given = parse_dsn(self.pg_url)
        try:
            conn = psycopg2.connect(self.pg_url, **{k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in given})
            conn.autocommit = True
            conn.cursor().execute(f"LISTEN {self.name}")
        except psycopg2.Error as exc:
            log.warning("bell %s: cannot LISTEN (%s); consumers re-check on timers until it can", self.channel, exc)
            return None
        return conn

    def _bind(self) -> None:
        directory = socket_dir(self.db_path)
        if not _private_dir(directory, create=True):
            raise PermissionError(f"bell directory {directory} is not private to this user")
        path = directory / f"{self.channel}-{os.getpid()}-{secrets.token_hex(4)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # inside a 0700 directory, so nobody could reach it meanwhile
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        self.sock, self.path, self._ino = sock, path, os.stat(path).st_ino

    def fileno(self) -> int:
        return self.conn.fileno() if self.pg_url is not None else self.sock.fileno()

    def read(self) -> list[str]:
        """Topics rung since the last read, once ``fileno()`` was readable; ``[ALL]`` when
        the connection was lost (then ``lost`` is set and ``repair()`` reconnects)."""
        topics: list[str] = []
        if self.pg_url is None:
            while True:
                try:
                    topics += self.sock.recv(65536).decode(errors="replace").split()
                except BlockingIOError:
                    return topics
        import psycopg2

        try:
            self.conn.poll()
        except psycopg2.Error as exc:
            log.warning("bell %s: connection lost (%s); listening again", self.channel, exc)
            self.lost = True
            return [ALL]
        while self.conn.notifies:
            topics += self.conn.notifies.pop(0).payload.split()
        return topics

    def drop(self) -> None:
        """Close a lost (or any) PostgreSQL connection."""
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn, self.lost = None, False

    def vanished(self) -> bool:
        """True when our socket file is gone or replaced: rings can no longer reach us."""
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def repair(self) -> list[str]:
        """Listen again if needed; ``[ALL]`` when it did (rings may have been missed)."""
        if self.pg_url is not None:
            if self.listening:
                return []
            self.drop()
            self.conn = self.connect()
            return [ALL] if self.conn is not None else []
        if not self.vanished():
            return []
        log.warning("bell %s: socket %s vanished; binding a new one", self.channel, self.path)
        self._close_socket()
        self._bind()
        return [ALL]

    def wait(self, timeout: float, also=()) -> list:
        """Block until a ring, one of ``also`` is readable, or ``timeout``; returns what
        fired (``self`` when rung: a ring, a lost connection, or listening again)."""
        try:
            if self.repair():
                return [self]
        except OSError as exc:  # a socket that cannot be bound again: the timer still runs
            log.warning("bell %s: cannot bind again (%s); retrying on the next wait", self.channel, exc)
        if not self.listening:
            ready, _, _ = select.select(list(also), [], [], max(0.0, timeout))
            return ready
        ready, _, _ = select.select([self, *also], [], [], max(0.0, timeout))
        if self in ready:
            self.read()
            if self.lost:
                self.drop()
        return ready

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._ino:
                    self.path.unlink()  # never another listener's that took the name

    def close(self) -> None:
        self.drop()
        self._close_socket()


class AsyncListener:
    """Calls ``on_ring(topics)`` in the running loop for every ring on ``channel``.

    Only the first connection is made in the loop (as a pool's first would be), so the
    consumer's first read follows the LISTEN; after a failed start or a loss PostgreSQL
    reconnects on a thread, never blocking the loop, and consumers rely on their timers
    meanwhile. Every ``RELISTEN_SECONDS`` it checks that it still listens (a SQLite
    socket file can be removed under it)."""

    def __init__(self, channel: str, database_url: str, on_ring: Callable[[list[str]], None]):
        self.on_ring = on_ring
        self.loop = asyncio.get_running_loop()
        self.listener = Listener(channel, database_url)
        self.alive = True
        self._fd = None
        self._connecting = False
        if self.listener.listening:
            self._add_reader()
        else:
            self._connect()
        self._timer = self.loop.call_later(RELISTEN_SECONDS, self._tick)

    def _add_reader(self) -> None:
        self._fd = self.listener.fileno()
        self.loop.add_reader(self._fd, self._readable)

    def _remove_reader(self) -> None:
        if self._fd is not None:
            self.loop.remove_reader(self._fd)
            self._fd = None

    def _readable(self) -> None:
        topics = self.listener.read()
        if self.listener.lost:
            self._remove_reader()
            self.listener.drop()
            self._connect()
        if topics:
            self.on_ring(topics)

    def _connect(self) -> None:
        if self._connecting or not self.alive:
            return
        self._connecting = True

        def connect():
            conn = self.listener.connect()
            try:
                self.loop.call_soon_threadsafe(self._connected, conn)
            except RuntimeError:  # the loop closed meanwhile
                if conn is not None:
                    conn.close()

        threading.Thread(target=connect, name=f"postern-bell-{self.listener.channel}", daemon=True).start()

    def _connected(self, conn) -> None:
        self._connecting = False
        if conn is None:
            return  # the next tick tries again
        if not self.alive:
            conn.close()
            return
        self.listener.conn = conn
        self._add_reader()
        self.on_ring([ALL])  # rings while not listening could not reach us

    def _tick(self) -> None:
        if not self.alive:
            return
        if self.listener.pg_url is not None:
            if not self.listener.listening:
                self._connect()
        elif self.listener.vanished():
            self._remove_reader()
            try:
                missed = self.listener.repair()
            except OSError as exc:
                log.warning("bell %s: cannot bind again (%s); retrying", self.listener.channel, exc)
            else:
                self._add_reader()
                self.on_ring(missed)
        self._timer = self.loop.call_later(RELISTEN_SECONDS, self._tick)

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._timer.cancel()
        self._remove_reader()
        self.listener.close()
