"""Every database error at the CLI is one ``Error:`` line saying what to do, never a
traceback: unreachable server, missing database, refused login, unwritable SQLite
path, unmigrated schema; for `admin`, `serve`, `init` and `db upgrade` alike."""

import os
import sqlite3
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner
from support.server import free_port

from postern.cli import cli

PG_URL = os.environ.get("POSTERN_TEST_DATABASE_URL", "")
needs_pg = pytest.mark.skipif(not PG_URL, reason="needs POSTERN_TEST_DATABASE_URL (a PostgreSQL server)")
COMMANDS = [["admin", "customer", "list"], ["serve"], ["db", "upgrade"], ["init", "{tmp}/site"]]


def pg_url(**change) -> str:
    """POSTERN_TEST_DATABASE_URL with its user, port or database changed."""
    parts = urlsplit(PG_URL)
    user = change.get("user", parts.username or "postgres")
    port = change.get("port", parts.port or 5432)
    path = "/" + change.get("database", parts.path.lstrip("/"))
    return urlunsplit((parts.scheme, f"{user}@{parts.hostname}:{port}", path, "", ""))


@pytest.fixture(autouse=True)
def private_umask():
    """As `postern`'s entry point sets it (main), so no mode is left to tighten and log."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def run_cli(monkeypatch, tmp_path, url, args, **env):
    monkeypatch.setenv("POSTERN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSTERN_DATABASE_URL", url)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    return CliRunner().invoke(cli, args, obj={})


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@needs_pg
@pytest.mark.parametrize("args", COMMANDS)
def test_missing_postgres_database(monkeypatch, tmp_path, args):
    result = run_cli(monkeypatch, tmp_path, pg_url(database="nosuchdb"), args)
    assert_one_error_line(result, "database 'nosuchdb' does not exist on ", "createdb", "nosuchdb) or fix database.url")


@needs_pg
@pytest.mark.parametrize("args", COMMANDS)
def test_refused_postgres_login(monkeypatch, tmp_path, args):
    result = run_cli(monkeypatch, tmp_path, pg_url(user="nosuchuser"), args)
    assert_one_error_line(result, "refused user 'nosuchuser'", "fix the user and password in database.url")


@pytest.mark.parametrize("args", COMMANDS)
def test_unreachable_postgres_server(monkeypatch, tmp_path, args):
    pytest.importorskip("psycopg2")
    port = free_port()  # nothing listens there
    result = run_cli(monkeypatch, tmp_path, f"postgresql://postgres@127.0.0.1:{port}/postern", args)
    assert_one_error_line(
        result, f"cannot reach PostgreSQL at 127.0.0.1:{port} (Connection refused)", "start the server"
    )


@pytest.mark.parametrize("args", COMMANDS)
def test_sqlite_path_that_cannot_be_created(monkeypatch, tmp_path, args):
    (tmp_path / "afile").write_text("")
    result = run_cli(monkeypatch, tmp_path, f"sqlite:///{tmp_path}/afile/postern.db", args)
    assert_one_error_line(result, f"cannot create {tmp_path}/afile, the directory of the SQLite database")


@pytest.mark.parametrize("args", COMMANDS)
def test_sqlite_path_that_cannot_be_opened(monkeypatch, tmp_path, args):
    (tmp_path / "adir").mkdir()
    result = run_cli(monkeypatch, tmp_path, f"sqlite:///{tmp_path}/adir", args)
    assert_one_error_line(result, f"cannot open the SQLite database {tmp_path}/adir for writing")


@pytest.mark.parametrize("args", [["admin", "customer", "list"], ["serve"]])
def test_schema_not_migrated(monkeypatch, tmp_path, args):
    url = f"sqlite:///{tmp_path}/postern.db"
    result = run_cli(monkeypatch, tmp_path, url, args, POSTERN_DATABASE_AUTO_MIGRATE="false")
    assert_one_error_line(result, "database schema is at version 0", "run 'postern db upgrade'")


def test_schema_missing_a_table(monkeypatch, tmp_path):
    """The migration record says current but a table is gone (restored from a partial dump)."""
    url = f"sqlite:///{tmp_path}/postern.db"
    assert run_cli(monkeypatch, tmp_path, url, ["db", "upgrade"]).exit_code == 0
    with sqlite3.connect(tmp_path / "postern.db") as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("DROP TABLE customer")
    result = run_cli(monkeypatch, tmp_path, url, ["admin", "customer", "list"])
    assert_one_error_line(result, "the database schema is incomplete (no such table: customer)", "postern db upgrade")


@needs_pg
def test_readme_example_as_a_real_process(tmp_path):
    """What an operator types, in a real process: one line on stderr, exit 1."""
    env = {
        **os.environ,
        "POSTERN_DATA_DIR": str(tmp_path / "data"),
        "POSTERN_DATABASE_URL": pg_url(database="nosuchdb"),
    }
    env.pop("POSTERN_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "postern", "admin", "customer", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: database 'nosuchdb' does not exist on 127.0.0.1:5432: create it (createdb ")
