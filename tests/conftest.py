"""Shared fixtures. The whole suite runs on SQLite, and on PostgreSQL when
POSTERN_TEST_DATABASE_URL is set (tox -e postgres); each test gets its own schema."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import falcon.testing
import pytest
from hypothesis import settings
from support import server as live_servers

from postern.api import create_app
from postern.core import migrations
from postern.core.config import load_config
from postern.core.db import DatabaseRunner, database, open_database
from postern.core.doorbell import Waiters
from postern.core.runtime import build_postern

PG_URL = os.environ.get("POSTERN_TEST_DATABASE_URL", "")
TESTS_DIR = Path(__file__).parent

# CI replays the same generated inputs every run (seeded from each test's own code), so
# a red CI means a change broke something, never that this run drew a new input. Runs
# outside CI draw fresh inputs, and the long explorations are `tox -e fuzz` and
# `tox -e reliability` (docs/reliability.md); what they find becomes a regression test.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") and not any(os.environ.get(v) for v in ("POSTERN_FUZZ_CASES", "POSTERN_FUZZ_EXAMPLES")):
    settings.load_profile("ci")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that started ``postern serve`` shows each server's log, processes and
    their stacks: a hang in CI can be read from CI's output alone. After its teardown no
    server of the test runs on into the next one."""
    report = yield
    try:
        if report.failed:
            for server in live_servers.started_in_test:
                report.sections.append((f"postern serve on port {server.port}", live_servers.post_mortem(server)))
        if report.when == "teardown":
            for server in live_servers.started_in_test:
                if getattr(server, "proc", None) is not None:
                    live_servers.kill_tree(server)  # one left running (a start that timed out) stops here
    except Exception as exc:  # noqa: BLE001 (an error here would end the whole session)
        report.sections.append(("postern serve", f"no report of its servers: {exc!r}"))
    finally:
        if report.when == "teardown":
            live_servers.started_in_test.clear()
    return report


@pytest.fixture(autouse=True)
def _metrics_directory_does_not_leak():
    """``postern serve`` run in this process (CliRunner) sets PROMETHEUS_MULTIPROC_DIR for
    the children it would start; no later test, nor the servers it starts, inherits it."""
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    yield
    if before is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = before


@pytest.fixture(autouse=True)
def _apps_release_their_connections(monkeypatch):
    """Close what every API app a test built holds, as a worker's ASGI shutdown would:
    each database thread of its runner keeps a connection, and its doorbell a LISTEN
    one. Tests build apps with ``create_app`` directly and never shut them down, so on
    PostgreSQL a full run would otherwise pile up idle connections until the server
    refuses new ones ("too many clients already")."""
    made: list = []
    for cls in (DatabaseRunner, Waiters):
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, made))
    yield
    for thing in reversed(made):
        try:
            thing.close() if isinstance(thing, Waiters) else thing.shutdown()
        except RuntimeError:
            pass  # its event loop is gone (falcon's test client runs one per request)


def _recording(init, made: list):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    return __init__


@pytest.fixture
def db_url(tmp_path):
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path}/postern.db"
        return
    import psycopg2

    schema = "t_" + secrets.token_hex(6)
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def env(tmp_path, db_url):
    """Environment that points a Postern (in-process or a child) at the test database.

    Sender verification is off here: it would ask the machine's resolver about every
    test sender's domain, so the suite's speed and results would depend on the network.
    tests/test_verdicts.py turns it on against a DNS server of its own.

    Request rate limits are off too: the suite makes hundreds of requests a minute from
    one address with one key, as no client of a small server should. tests/test_limits.py
    turns them on with small limits and tests them, in process and in ``postern serve``."""
    return {
        "POSTERN_DATA_DIR": str(tmp_path / "data"),
        "POSTERN_DATABASE_URL": db_url,
        "POSTERN_TRUST_VERIFY": "false",
        "POSTERN_LIMITS_ENABLED": "false",
    }


@pytest.fixture
def config(env):
    return load_config(environ=env)


@pytest.fixture
def db(db_url):
    """The test database, migrated to the latest schema and connected."""
    opened = open_database(db_url)
    database.connect(reuse_if_open=True)
    migrations.upgrade()
    yield database.obj
    database.close()
    opened.close()  # the test may have opened the database again (build_postern does)


@pytest.fixture
def postern(config, db):
    """A Postern with the built-in plugins on the migrated test database. A test file that
    needs other settings overrides ``config`` (``def config(config): ...; return config``)."""
    return build_postern(config)


@pytest.fixture
def client(postern):
    """Falcon's test client over the real API app of ``postern``."""
    return falcon.testing.TestClient(create_app(postern))


@pytest.fixture
def served(postern):
    """``(postern, transport)``: the real API app in process behind an httpx transport,
    for the SDK and the MCP server to talk to without a socket."""
    from postern.testing.inprocess import InProcessTransport

    transport = InProcessTransport(create_app(postern))
    yield postern, transport
    transport.shutdown()


@pytest.fixture
def sink():
    """A smarthost on a loopback port: yields (``support.sink.Sink``, port)."""
    from aiosmtpd.controller import Controller
    from support.server import free_port
    from support.sink import Sink

    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture
def serve(env, tmp_path):
    """Start a real ``postern serve`` on the test database: ``serve(services=..., env=...,
    config=..., smtp_options=...)`` returns the ``support.server.Server`` once it is
    ready; every server started is killed after the test."""
    from support.server import Servers

    servers = Servers(env, tmp_path)
    yield servers
    servers.kill_all()


@pytest.fixture(scope="session")
def wildduck_stack():
    """A real WildDuck (SecantusDB + Redis + wildduck@1.46.1) on loopback ports, started
    once per session. Skips when the stack is not installed here, but fails in CI,
    where .ci/run installs it."""
    from support.wildduck_stack import StackUnavailable, WildDuckStack

    stack = WildDuckStack()
    try:
        stack.start()
    except StackUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must install it: see .ci/run)")
        pytest.skip(str(exc))
    yield stack
    stack.stop()
