"""The bell (postern.core.bell) that mail waits, DNS zone caches and the webhook dispatcher
share: rings reach listeners in other processes, named channels stay apart, a listener
comes back after its PostgreSQL connection is killed or its socket file removed (and
says rings may have been missed, so its consumer re-reads), and its files are private.
Each test uses channels of its own: other runs may share the PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.faults import TcpProxy
from support.server import wait_for

from postern.core import bell
from postern.core.db import database, is_postgres
from postern.core.doorbell import SAFETY_RECHECK, Waiters

EAR = Path(__file__).parent / "support" / "bell_ear.py"


def channel() -> str:
    return "t" + secrets.token_hex(6)


class Ear:
    """``bell_ear.py`` in a process of its own; its printed lines arrive on a queue."""

    def __init__(self, channel: str, url: str):
        self.proc = subprocess.Popen([sys.executable, str(EAR), channel, url], stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("listening")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, wanted: str, timeout: float = 30.0) -> list[str]:
        """Read lines until ``wanted``; returns the ones before it."""
        before = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {wanted!r} within {timeout}s; got {before}") from None
            if line == wanted:
                return before
            before.append(line)

    def hear(self, *topics: str, timeout: float = 30.0) -> set[str]:
        """Read lines until every one of ``topics`` was rung (one line may hold several
        rings: a listener reads all that queued up at once); returns all topics seen."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while not seen >= set(topics):
            try:
                seen |= set(self.lines.get(timeout=max(0.0, deadline - time.monotonic())).split())
            except queue.Empty:
                raise AssertionError(f"not all of {topics} within {timeout}s; got {seen}") from None
        return seen

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def ears(*specs):
    started = []
    try:
        for spec in specs:
            started.append(Ear(*spec))
        yield started
    finally:
        for ear in started:
            ear.stop()


def test_a_ring_reaches_every_listener_in_other_processes_and_channels_do_not_cross(db, db_url):
    mail, dns = channel(), channel()
    with ears((mail, db_url), (mail, db_url), (dns, db_url)) as (first, second, other):
        bell.ring(mail, ["in_a", "in_b", "in_a"])
        bell.ring(dns, ["acme.example"])
        bell.ring(mail, ["in_c"])
        for ear in (first, second):
            # The dns ring went out before in_c: had it reached this socket or connection, it
            # would have come before in_c (one socket, one connection: delivered in order).
            assert ear.hear("in_a", "in_b", "in_c") - {bell.ALL} == {"in_a", "in_b", "in_c"}
        assert other.hear("acme.example") - {bell.ALL} == {"acme.example"}
        bell.ring(dns)  # no topics: look at everything
        assert other.hear(bell.ALL) == {bell.ALL}


def test_a_select_loop_listener_hears_rings_from_another_process(db, db_url):
    """The webhook dispatcher's way: ``wait`` in a ``select`` loop, rung from elsewhere."""
    name = channel()
    listener = bell.Listener(name, db_url)
    try:
        assert listener.wait(0.05) == []  # nothing rang
        ringer = subprocess.run(
            [sys.executable, "-c", RING_FROM_ANOTHER_PROCESS, db_url, name], capture_output=True, text=True
        )
        assert ringer.returncode == 0, ringer.stderr
        assert wait_for(lambda: listener.wait(1.0), timeout=30) == [listener]
        assert listener.wait(0.05) == []  # read: not rung again
    finally:
        listener.close()


RING_FROM_ANOTHER_PROCESS = """
import sys
from postern.core import bell
from postern.core.db import database, open_database
open_database(sys.argv[1])
with database.connection_context():
    bell.ring(sys.argv[2], ["queued"])
"""


def test_a_notify_inside_a_rolled_back_transaction_is_never_heard(db, db_url):
    if not is_postgres():
        pytest.skip("PostgreSQL's NOTIFY is transactional; SQLite datagrams go at once")
    name = channel()
    with ears((name, db_url)) as (ear,):
        with database.atomic() as txn:
            bell.ring(name, ["rolled_back"])
            txn.rollback()
        with database.atomic():
            bell.ring(name, ["committed"])
        assert "rolled_back" not in ear.expect("committed")


def backend_of(name: str) -> int:
    """The PostgreSQL backend pid of the one listener on ``name``."""
    rows = database.execute_sql(
        "SELECT pid FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()", (f"LISTEN postern_{name}",)
    ).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


def test_a_listener_whose_connection_is_killed_says_so_listens_again_and_hears_later_rings(db, db_url):
    if not is_postgres():
        pytest.skip("a PostgreSQL LISTEN connection")
    name = channel()
    with ears((name, db_url)) as (ear,):
        old = backend_of(name)
        database.execute_sql("SELECT pg_terminate_backend(%s)", (old,))
        assert ear.expect(bell.ALL) == []  # lost: its consumer re-reads at once
        assert ear.expect(bell.ALL) == []  # listening again: and re-reads, for rings missed meanwhile
        assert backend_of(name) != old
        bell.ring(name, ["later"])
        assert ear.expect("later") == []


def test_mail_waiters_re_read_when_the_bell_lost_its_connection_and_wake_on_later_rings(db, db_url):
    """The consumer side of the above: every parked waiter wakes to re-read the store."""
    if not is_postgres():
        pytest.skip("a PostgreSQL LISTEN connection")

    async def scenario():
        waiters = Waiters(db_url)
        reads, mail = [], asyncio.Event()

        async def read(cursor):
            reads.append(cursor)
            return (b"mail" if mail.is_set() else None), cursor

        waiters.ensure_listening()
        try:
            listener = waiters._listener.listener
            await wait_until(lambda: listener.listening)
            wait = asyncio.ensure_future(waiters.wait("inbox_1", 0, 60, read))
            await wait_until(lambda: len(reads) == 1)  # parked after its first look
            database.execute_sql("SELECT pg_terminate_backend(%s)", (listener.conn.get_backend_pid(),))
            # Woken by the loss, not by mail, and well before its 15 s safety re-read.
            await wait_until(lambda: len(reads) >= 2, timeout=SAFETY_RECHECK - 5)
            await wait_until(lambda: listener.listening)
            mail.set()
            bell.ring("mail", ["inbox_1"])
            # the new connection hears later rings (again sooner than the safety re-read)
            assert await asyncio.wait_for(wait, SAFETY_RECHECK - 5) == (b"mail", 0)
        finally:
            waiters.close()

    asyncio.run(scenario())


async def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def proxied(db_url: str, port: int) -> str:
    parts = urlsplit(db_url)
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()


def test_a_select_loop_listener_starts_without_the_database_and_listens_once_it_is_back(db, db_url):
    """The webhook dispatcher must not exit without PostgreSQL; a ring while the link is
    down is lost, so the first wait that listens again reports itself as rung."""
    if not is_postgres():
        pytest.skip("a PostgreSQL LISTEN connection")
    name = channel()
    parts = urlsplit(db_url)
    with TcpProxy(parts.hostname, parts.port or 5432) as proxy:
        proxy.cut()
        listener = bell.Listener(name, proxied(db_url, proxy.port))  # does not raise
        try:
            assert listener.wait(0.05) == []  # no subscription yet: a plain timeout
            bell.ring(name, ["missed"])
            proxy.restore()
            assert listener.wait(0.05) == [listener]  # listening again: the consumer sweeps
            bell.ring(name, ["heard"])
            assert listener.wait(30) == [listener]  # and rings arrive
            proxy.cut()
            assert listener.wait(30) == [listener]  # the link died: seen, reported
            proxy.restore()
            assert listener.wait(0.05) == [listener]  # and listening again
        finally:
            listener.close()


def sockets(name: str, db) -> list[Path]:
    return sorted(bell.socket_dir(Path(db.database)).glob(f"{name}-*.sock"))


def test_a_dead_listeners_socket_is_removed_by_the_next_ring_and_the_others_still_hear(db, db_url):
    if is_postgres():
        pytest.skip("SQLite's socket directory")
    name = channel()
    with ears((name, db_url)) as (ear,):
        (live,) = sockets(name, db)
        dead = live.with_name(f"{name}-1-deadbeef.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(dead))  # closed without unlinking: a listener that was killed
        bell.ring(name, ["after_a_crash"])
        assert ear.expect("after_a_crash") == []
        assert not dead.exists()
        assert sockets(name, db) == [live]


def test_a_listener_whose_socket_file_vanished_binds_again_and_says_rings_were_missed(db, db_url):
    if is_postgres():
        pytest.skip("SQLite's socket directory")
    name = channel()
    with ears((name, db_url)) as (ear,):
        (old,) = sockets(name, db)
        old.unlink()  # a cleaner of temporary files, or an operator
        bell.ring(name, ["lost"])  # reaches nobody, and breaks nothing
        assert ear.expect(bell.ALL, timeout=60) == []  # it noticed, and its consumer re-reads
        (new,) = sockets(name, db)
        assert new != old
        bell.ring(name, ["found"])
        assert ear.expect("found") == []


@pytest.fixture
def short_db(tmp_path):
    """A database in a short directory, so the sockets sit beside it (tmp_path is long)."""
    directory = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    yield directory / "postern.db"
    for path in sorted(directory.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    directory.rmdir()


def test_the_socket_directory_is_private_and_the_sockets_owner_only_whatever_the_umask(short_db):
    directory = bell.socket_dir(short_db)
    assert directory == Path(f"{short_db}-bell")  # beside the database, in the data directory
    old_umask = os.umask(0)
    try:
        listener = bell.Listener("mail", f"sqlite:///{short_db}")
    finally:
        os.umask(old_umask)
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(listener.path.stat().st_mode)
    finally:
        listener.close()
    assert not listener.path.exists()  # a clean close leaves nothing behind
    directory.chmod(0o755)  # made loose by someone: tightened on the next start
    bell.Listener("mail", f"sqlite:///{short_db}").close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_deep_data_directory_falls_back_to_a_short_private_directory(tmp_path):
    deep = tmp_path / ("d" * 60) / "postern.db"
    directory = bell.socket_dir(deep)
    assert directory.parent == Path(tempfile.gettempdir())
    listener = bell.Listener("mail", f"sqlite:///{deep}")
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600
    finally:
        listener.close()
        directory.rmdir()


def test_a_socket_directory_owned_by_another_user_is_refused(short_db):
    if os.geteuid() != 0:
        pytest.skip("making a directory another user owns needs root")
    directory = bell.socket_dir(short_db)
    directory.mkdir(mode=0o777)
    os.chown(directory, 65534, 65534)  # a squatter's, e.g. in a shared /tmp
    try:
        with pytest.raises(PermissionError):
            bell.Listener("mail", f"sqlite:///{short_db}")
        trap = directory / "mail-1-0badc0de.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(trap))
            sock.setblocking(False)
            bell.ring_sockets(short_db, "mail", "secret_inbox")
            with pytest.raises(BlockingIOError):
                sock.recv(100)  # nothing was sent into it
    finally:
        for path in directory.iterdir():
            path.unlink()


def test_channel_names_are_checked_and_long_rings_become_all():
    for bad in ("", "Mail", "mail-x", "a b", "x" * 21, "1abc"):
        with pytest.raises(ValueError):
            bell.pg_channel(bad)
    assert bell.pg_channel("mail") == "postern_mail"
    assert bell.payload_of([]) == bell.ALL
    assert bell.payload_of(["b", "a", "b"]) == "a b"
    assert bell.payload_of([f"zone{i}.example" for i in range(1000)]) == bell.ALL
