"""Shared plumbing for the Postern benchmarks in bench/ (not a benchmark itself).

- ``World``: a temp data dir and config file, with one tenant, one agent key and N
  inboxes made through ``postern.core`` (as tests/support/world.py does), ready for a
  real ``postern serve`` / ``postern service run smtp`` child to use.
- ``spawn`` / ``stop``: children in their own session, stopped with SIGTERM to the
  group, then every descendant that outlived it (the supervisor puts its children in
  sessions of their own) is killed by pid, so nothing is left behind.
- ``wait_http`` / ``wait_smtp``: readiness by a real request or a real 220 banner.

Request rate limits (``[limits]``, docs/limits.md) are off in every bench's config
unless it asks for them (``limits=``): the benches measure features under a load no
well-behaved agent makes, not the throttle; bench/limits_overhead.py measures that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
TESTS_DIR = ROOT / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # for support.world (tenants and agent keys through the core)


def free_port() -> int:
    # The kernel picks an unused port; the tiny race until the server binds it is acceptable here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a Postern data dir with a tenant, a key and inboxes ---------------------------


@dataclass
class World:
    tmp: Path
    http_port: int
    smtp_port: int
    workers: int
    key: str = ""
    inboxes: list[dict] = field(default_factory=list)  # {"id", "address"}

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def config_file(self) -> Path:
        return self.tmp / "postern.toml"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "postern.db"

    def env(self) -> dict[str, str]:
        """The child's environment: the config file and no stray POSTERN_* overrides."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
        env["POSTERN_CONFIG"] = str(self.config_file)
        return env

    def write_config(self, extra: str = "", smtp_extra: str = "", limits: str = "off", server_extra: str = "") -> None:
        """``limits``: ``"off"``, ``"high"`` or the body of a ``[limits]`` table (``limits_table``);
        ``server_extra``: more lines for ``[server]``."""
        if "[limits]" in extra:
            raise ValueError("give the [limits] table as limits=, not in extra")
        self.config_file.write_text(
            f'data_dir = "{self.data_dir}"\n'
            f"{extra}"
            "[server]\n"
            f'bind = "127.0.0.1:{self.http_port}"\n'
            f"workers = {self.workers}\n"
            "graceful_timeout = 5\n"
            f"{server_extra}"
            "[receive.smtp_local]\n"
            f'bind = "127.0.0.1:{self.smtp_port}"\n'
            f"{smtp_extra}"
            f"{limits_table(limits)}"
        )


#: The rate of every limit under ``limits="high"``: each request is counted, none refused.
HIGH_RATE = "1000000/minute"


def limits_table(limits: str = "off") -> str:
    """The ``[limits]`` table of a bench's config file (docs/limits.md).

    - ``"off"`` (every bench's default): ``enabled = false``. The benches hammer one agent
      key from one address to measure a feature (listing, sending, waiting, MCP, ingest);
      with Postern's default limits they would measure 429s instead.
    - ``"high"``: limits on, every rate ``HIGH_RATE``: each request is counted in the
      shared counters and none is refused, so the figure is what the limiter costs.
    - anything else: the table's body as TOML, e.g. ``'agent_read = "10/minute"\\n'``
      (limits on, the defaults for every rate it does not name).
    """
    if limits == "off":
        body = "enabled = false\n"
    elif limits == "high":
        from dataclasses import fields

        from postern.core.configsections import LimitsConfig

        # Every rate (string field) at HIGH_RATE; numbers (recipients_per_message,
        # fresh_domain_days) keep their defaults, which the bench's sends stay within.
        rates = [f.name for f in fields(LimitsConfig) if f.type == "str" and f.name != "storage"]
        body = "enabled = true\n" + "".join(f'{name} = "{HIGH_RATE}"\n' for name in rates)
    else:
        body = limits if limits.endswith("\n") else limits + "\n"
    return "[limits]\n" + body


def make_world(
    tmp: Path,
    inboxes: int = 1,
    workers: int = 2,
    config_extra: str = "",
    smtp_extra: str = "",
    limits: str = "off",
    server_extra: str = "",
) -> World:
    """Config file + migrated SQLite database + tenant ``bench`` + one agent key + inboxes.
    ``limits``: see ``limits_table`` (off unless asked for)."""
    from support.world import INFO, make_tenant

    from postern.core import migrations
    from postern.core.auth import authenticate
    from postern.core.config import load_config
    from postern.core.db import database
    from postern.core.inboxes import create_inbox
    from postern.core.runtime import build_postern

    world = World(tmp, free_port(), free_port(), workers)
    world.write_config(config_extra, smtp_extra, limits, server_extra)
    postern = build_postern(load_config(world.config_file, environ={}))
    with database.connection_context():
        migrations.upgrade()
        tenant = make_tenant("bench")
        enrolled = tenant.agent_key(handle="bench", max_mailboxes=max(inboxes, 1), ttl=dt.timedelta(hours=12))
        principal = authenticate(enrolled.agent_key, "agent", INFO)
        for i in range(inboxes):
            inbox, _ = create_inbox(postern, principal, INFO, {"username": f"bench{i}"})
            world.inboxes.append({"id": inbox.id, "address": inbox.address})
    database.close()
    world.key = enrolled.agent_key
    world._postern = postern
    return world


def prefill(world: World, inbox: dict, count: int, body_bytes: int = 2048) -> None:
    """Store ``count`` messages of about ``body_bytes`` through the core's ingest path."""
    from postern.core.db import database
    from postern.core.mail.ingest import ingest

    line = ("lorem ipsum dolor sit amet " * 4)[:78] + "\r\n"
    body = (line * (body_bytes // len(line) + 1))[:body_bytes]
    with database.connection_context():
        for i in range(count):
            raw = (
                f"From: Sender {i} <s{i}@example.org>\r\nTo: {inbox['address']}\r\n"
                f"Subject: prefill {i}\r\nMessage-ID: <prefill-{i}@example.org>\r\n\r\n{body}"
            ).encode()
            ingest(world._postern, raw, f"s{i}@example.org", [inbox["address"]])
    database.close()


def count_messages(world: World) -> int:
    """Rows in Postern's message table, read directly from the SQLite file."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(world.db_path)) as conn:
        return conn.execute("SELECT count(*) FROM message").fetchone()[0]


def postern_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "postern", *args]


# ---- child processes ---------------------------------------------------------------


class Child:
    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.log_path = name, log_path
        with open(log_path, "wb") as log:
            # Own session, so SIGTERM to the group reaches every process it forks.
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL if it lingers; then kill any descendant that
    lives in a session of its own (``postern serve`` starts each child with setsid)."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    # Stragglers still in the original group (gunicorn workers a moment behind the arbiter).
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(child: Child):
    try:
        yield child
    finally:
        child.stop()


def wait_http(child: Child, port: int, path: str, headers: dict | None = None, timeout: float = 60) -> None:
    """Until a real request gets a 200: the port alone opens before any worker is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers=headers or {})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"no 200 from :{port}{path} within {timeout}s:\n{child.tail()}")


def wait_smtp(child: Child, port: int, timeout: float = 60) -> None:
    """Until the listener sends its 220 banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no SMTP banner on :{port} within {timeout}s:\n{child.tail()}")


def memory_of(root_pid: int) -> dict:
    """Memory of a process and all its descendants, in bytes: ``rss`` summed (counts the
    pages forked workers share once per process, so it overstates), ``pss`` summed (each
    shared page split between its sharers: the tree's real total) and ``uss`` summed
    (pages no other process has), with the number of ``processes``."""
    totals = {"rss": 0, "pss": 0, "uss": 0, "processes": 0}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(root_pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                full = proc.memory_full_info()
                totals["rss"] += full.rss
                totals["pss"] += getattr(full, "pss", full.rss)
                totals["uss"] += full.uss
                totals["processes"] += 1
    return totals


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


# ---- one table for `python -m bench` -------------------------------------------------

RESULTS_ENV = "POSTERN_BENCH_RESULTS"


def record(
    figure: str,
    value: float,
    unit: str,
    baseline: str = "",
    baseline_value: float | None = None,
    target: str = "",
    met: bool | None = None,
) -> None:
    """Hand one figure (beside its same-run baseline) to ``python -m bench``.

    A no-op when the script runs on its own; under ``python -m bench`` each call appends
    a JSON line to the file named by $POSTERN_BENCH_RESULTS, which the runner tabulates.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    import json

    row = dict(
        figure=figure, value=value, unit=unit, baseline=baseline, baseline_value=baseline_value, target=target, met=met
    )
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")
