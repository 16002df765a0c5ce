"""SQLite writers of several processes (API workers, SMTP listener processes) queue on
a file lock beside the database, which wakes the next one as soon as the holder lets
go, instead of meeting SQLite's busy handler and its sleeps of up to 100 ms."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time

import peewee
import pytest

from postern.core import db as dbmod
from postern.core.db import FAULT_UNAVAILABLE, database, database_fault, write_transaction

pytestmark = pytest.mark.usefixtures("db")

PROBE = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("held")
        else:
            print("free")
    """
)

HOLDER = textwrap.dedent(
    """
    import fcntl, sys, time
    f = open(sys.argv[1], "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def lock_file():
    if not isinstance(database.obj, peewee.SqliteDatabase):
        pytest.skip("the writer lock is SQLite's; PostgreSQL writers queue on row locks")
    return f"{database.obj.database}-writer.lock"


def seen_from_another_process(path: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_write_transaction_holds_the_lock_against_other_processes(lock_file):
    with write_transaction():
        assert seen_from_another_process(lock_file) == "held"
    assert seen_from_another_process(lock_file) == "free"


def test_nested_write_transactions_hold_it_until_the_outer_one_ends(lock_file):
    with write_transaction():
        with write_transaction():
            pass
        assert seen_from_another_process(lock_file) == "held"  # the inner exit did not let go
    assert seen_from_another_process(lock_file) == "free"


@contextlib.contextmanager
def held_by_another_process(lock_file: str):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_file], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_waits_for_the_holder_and_then_commits(lock_file):
    with held_by_another_process(lock_file) as holder:
        started = time.monotonic()
        threading.Timer(0.5, holder.kill).start()
        with write_transaction():
            database.execute_sql("CREATE TABLE waited (x INTEGER)")
        waited = time.monotonic() - started
    assert waited >= 0.45  # it did wait for the other process
    assert database.table_exists("waited")


def test_a_hung_holder_makes_a_writer_give_up_with_a_database_fault(lock_file, monkeypatch):
    monkeypatch.setattr(dbmod, "SQLITE_BUSY_TIMEOUT_MS", 300)
    with held_by_another_process(lock_file):
        started = time.monotonic()
        with pytest.raises(peewee.OperationalError, match="locked") as caught:
            with write_transaction():
                database.execute_sql("CREATE TABLE never (x INTEGER)")
        waited = time.monotonic() - started
    assert 0.25 <= waited < 5
    fault = database_fault(caught.value)
    assert fault is not None and fault.kind == FAULT_UNAVAILABLE  # the API answers 503, SMTP 451
    assert not database.table_exists("never")
    with write_transaction():  # and the next writer, once the holder is gone, goes ahead
        database.execute_sql("CREATE TABLE later (x INTEGER)")
