"""Faults of SQLite and of what surrounds the database, against a real `postern serve`
(or the real app in process): the database file locked by another process, the disk
under the data directory full, a smarthost that hangs, and which errors count as faults.
While a fault lasts SMTP answers 4xx (never 250) and the API 503 with Retry-After;
nothing half-written remains; once it clears the same requests succeed, with nothing
restarted. PostgreSQL's faults are in test_faults_postgres.py; docs/reliability.md."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import httpx
import peewee
import pytest
from support.faults import BadRelay, fill, small_filesystem, sqlite_write_lock
from support.live import (
    SERVICES,
    after_fault,
    api,
    assert_unavailable,
    counts,
    prepare,
    send_body,
    smtp_data,
    start,
    stop,
)
from support.server import wait_for
from support.world import make_tenant

from postern.api import create_app
from postern.core.db import database, database_fault
from postern.core.runtime import build_postern

pytestmark = pytest.mark.slow


def test_sqlite_locked_by_another_process(env, tmp_path, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("a SQLite file lock")
    server = start(env, tmp_path, prepare(db_url))
    try:
        inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
        before = counts(db_url)

        with sqlite_write_lock(db_url[len("sqlite:///") :]):
            # RCPT only reads (WAL readers are not blocked); DATA must store, and cannot.
            assert smtp_data(server, inbox["address"])[:2] == (250, 451)
            assert_unavailable(api(server, "POST", "/v1/inboxes", json={"username": "sales"}), "database_unavailable")
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("locked"))
            assert_unavailable(sent, "database_unavailable")
            # A read is answered only once its audit row is committed (docs/design.md),
            # so reads wait for the lock as writes do.
            assert_unavailable(api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages"), "database_unavailable")
            assert counts(db_url) == before  # nothing half-written

        # The lock is gone: the same requests succeed, nothing was restarted.
        assert smtp_data(server, inbox["address"])[:2] == (250, 250)
        assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
        sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("after"))
        assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
        assert api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
        assert counts(db_url) == after_fault(before)
        assert {s["name"]: s["restarts"] for s in server.health()["services"]} == dict.fromkeys(SERVICES, 0)
        assert "Traceback" not in server.output()
    finally:
        stop(server)


def test_sqlite_disk_full(env, tmp_path, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("fills the data directory's file system; the shared PostgreSQL server's disk is not ours to fill")

    with small_filesystem(tmp_path / "small", "24m") as disk:
        url = f"sqlite:///{disk}/postern.db"
        server = start(
            {**env, "POSTERN_DATA_DIR": str(disk / "data"), "POSTERN_DATABASE_URL": url}, tmp_path, prepare(url)
        )
        try:
            inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
            assert smtp_data(server, inbox["address"])[:2] == (250, 250)
            before = counts(url)
            # An empty write-ahead log, so the next write needs new blocks (a log that
            # grew earlier is reused in place and would hide a full disk for a while).
            with sqlite3.connect(disk / "postern.db") as conn:
                assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            filler = fill(disk)

            rcpt, data, text = smtp_data(server, inbox["address"])
            assert (rcpt, data) == (250, 452) and "4.3.1" in text, text
            assert_unavailable(api(server, "POST", "/v1/inboxes", json={"username": "sales"}), "storage_full")
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("full"))
            assert_unavailable(sent, "storage_full")
            assert server.health()["database"]["ok"] is True  # it is there and readable

            filler.unlink()  # space returns
            assert counts(url) == before  # nothing half-written

            assert smtp_data(server, inbox["address"])[:2] == (250, 250)
            assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
            sent = api(server, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=send_body("after"))
            assert sent.status_code == 201 and sent.json()["status"] == "captured", sent.text
            assert counts(url) == after_fault(before)
            with sqlite3.connect(disk / "postern.db") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert {s["name"]: s["restarts"] for s in server.health()["services"]} == dict.fromkeys(SERVICES, 0)
        finally:
            stop(server)


def test_a_hanging_smarthost_holds_only_the_sends_not_the_api(env, tmp_path, db_url):
    """Every send makes its first attempt at once; against a relay that never answers,
    each waits out the smarthost timeout. Those waits must not take the database threads
    that reads, inbox creation and health need."""
    with BadRelay("hang") as relay:
        relay_config = f'[send.smtp_local]\nsmarthost = "127.0.0.1:{relay.port}"\nstarttls = false\ntimeout = 60\n'
        # 2 database threads per worker on PostgreSQL too (SQLite's default): 4 sends would take them all.
        server = start({**env, "POSTERN_DATABASE_THREADS": "2"}, tmp_path, prepare(db_url), relay_config)
        try:
            inbox = api(server, "POST", "/v1/inboxes", json={"username": "support"}).json()
            sends = 4
            with ThreadPoolExecutor(sends) as pool:
                path = f"/v1/inboxes/{inbox['id']}/messages"
                pending = [pool.submit(api, server, "POST", path, json=send_body(f"s{i}")) for i in range(sends)]
                wait_for(lambda: relay.connections == sends)  # every send is stuck at the relay
                assert api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").status_code == 200
                assert api(server, "POST", "/v1/inboxes", json={"username": "sales"}).status_code == 201
                assert httpx.get(f"{server.url}/healthz", timeout=60).status_code == 200
                assert not any(f.done() for f in pending)  # answered while the sends still waited
                relay.release()  # the relay hangs up on them
                answers = [f.result() for f in pending]
            assert [(r.status_code, r.json()["status"]) for r in answers] == [(201, "queued")] * sends
            assert all("Connection unexpectedly closed" in r.json()["error"] for r in answers)
        finally:
            stop(server)


def sqlite_error(path, case: str) -> Exception:
    """The error a real SQLite database gives in ``case``, as peewee raises it."""
    setup = peewee.SqliteDatabase(str(path), pragmas={"journal_mode": "wal"})
    setup.execute_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    setup.execute_sql("INSERT INTO t VALUES (7)")
    setup.close()
    db = peewee.SqliteDatabase(str(path), timeout=0.05)
    statements = {
        "busy": ["INSERT INTO t VALUES (2)"],
        "readonly": ["INSERT INTO t VALUES (2)"],
        "full": ["PRAGMA max_page_count = 3", "CREATE TABLE big (b BLOB)", "INSERT INTO big VALUES (zeroblob(100000))"],
        "duplicate": ["INSERT INTO t VALUES (7)"],
        "no_table": ["SELECT * FROM missing"],
    }[case]
    if case == "readonly":
        db = peewee.SqliteDatabase(f"file:{path}?mode=ro", uri=True)
    holder = sqlite3.connect(path, isolation_level=None)
    if case == "busy":
        holder.execute("BEGIN EXCLUSIVE")
    try:
        for sql in statements:
            db.execute_sql(sql)
    except peewee.PeeweeException as exc:
        return exc
    finally:
        db.close()
        holder.close()
    raise AssertionError(f"{case}: no error")


@pytest.mark.parametrize(
    "case, kind",
    [
        ("busy", "database_unavailable"),
        ("readonly", "database_unavailable"),
        ("full", "storage_full"),
        ("duplicate", None),  # an integrity error is a bug or a race the code handles: not a fault
        ("no_table", None),  # a missing migration: retrying cannot help
    ],
)
def test_which_sqlite_errors_are_faults(tmp_path, case, kind):
    fault = database_fault(sqlite_error(tmp_path / "classify.db", case))
    assert (fault.kind if fault else None) == kind


def test_a_database_error_that_is_no_fault_stays_a_500(config, db):
    """503 says "nothing changed, retry": only for faults. A bug must not hide behind it."""
    enrolled = make_tenant("acme").agent_key(handle="support")
    client = falcon.testing.TestClient(create_app(build_postern(config)))
    headers = {"Authorization": f"Bearer {enrolled.agent_key}"}
    assert client.simulate_get("/v1/inboxes", headers=headers).status_code == 200
    database.execute_sql("DROP TABLE audit_event")  # every request writes one: now none can
    resp = client.simulate_get("/v1/inboxes", headers=headers)
    assert resp.status_code == 500 and resp.json["error"]["code"] == "internal_error"
    assert "Retry-After" not in resp.headers


def test_every_operation_documents_the_503(config, db):
    doc = falcon.testing.TestClient(create_app(build_postern(config))).simulate_get("/v1/openapi.json").json
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path != "/v1/openapi.json":
                assert "503" in op["responses"], (method, path)
    assert "Retry-After" in doc["paths"]["/v1/inboxes"]["post"]["responses"]["503"]["headers"]
