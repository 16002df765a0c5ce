"""A real WildDuck 1.46.1 on loopback: SecantusDB (as MongoDB) + a private Redis +
``node server.js`` from the npm harness in ``wildduck-harness/`` (``npm install`` there).

``WildDuckStack.start()`` picks free loopback ports, starts the three processes and
waits for WildDuck's ``All servers started``; ``stop()`` ends them, and ``stop_wildduck``
/ ``start_wildduck`` stop and restart only the Node process (the "WildDuck is down"
tests). Used by the test fixture and by bench/wildduck_latency.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .server import free_port

ROOT = Path(__file__).resolve().parents[2]
HARNESS_DIR = ROOT / "wildduck-harness"
WILDDUCK_DIR = HARNESS_DIR / "node_modules" / "wildduck"
READY_LINE = "All servers started"


class StackUnavailable(Exception):
    """A part of the stack is not installed here; the message says which and how to get it."""


def missing_parts() -> list[str]:
    """What is not installed, with the command that installs it; empty when all is."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 20)")
    if not (WILDDUCK_DIR / "server.js").exists():
        missing.append(f"wildduck (cd {HARNESS_DIR.relative_to(ROOT)} && npm install)")
    if shutil.which("secantusd-py") is None:
        missing.append("secantusd-py (pip install secantusdb==0.7.0b3)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    return missing


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class WildDuckStack:
    """Ports and processes of one running stack."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wildduck-")))
    mongo_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    imap_port: int = field(default_factory=free_port)
    lmtp_port: int = field(default_factory=free_port)
    procs: dict = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/3"

    def start(self) -> WildDuckStack:
        missing = missing_parts()
        if missing:
            raise StackUnavailable("WildDuck stack not installed: " + "; ".join(missing))
        try:
            self.procs["mongo"] = self._spawn(
                "secantusd",
                ["secantusd-py", "--host", "127.0.0.1", "--port", str(self.mongo_port)]
                + ["--storage-path", ":memory:", "--standalone"],
            )
            self.procs["redis"] = self._spawn(
                "redis",
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port)]
                + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            )
            _wait_port(self.mongo_port, self.procs["mongo"], "secantusd")
            _wait_port(self.redis_port, self.procs["redis"], "redis-server")
            self.start_wildduck()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _config(self) -> Path:
        path = self.workdir / "wildduck.toml"
        path.write_text(
            f"""
[dbs]
mongo = "mongodb://127.0.0.1:{self.mongo_port}/wildduck"
[dbs.redis]
host = "127.0.0.1"
port = {self.redis_port}
db = 3
[imap]
host = "127.0.0.1"
port = {self.imap_port}
secure = false
disableSTARTTLS = true
[pop3]
enabled = false
[lmtp]
enabled = true
host = "127.0.0.1"
port = {self.lmtp_port}
[api]
host = "127.0.0.1"
port = {self.api_port}
secure = false
"""
        )
        return path

    def start_wildduck(self, timeout: float = 60) -> None:
        log_path = self.workdir / "wildduck.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        self.procs["wildduck"] = proc = self._spawn(
            "wildduck", ["node", "server.js", f"--config={self._config()}"], cwd=WILDDUCK_DIR
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"wildduck exited with {proc.returncode}; see {log_path}")
            with open(log_path, "rb") as log:
                log.seek(offset)
                if READY_LINE.encode() in log.read():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"wildduck did not start within {timeout} s; see {log_path}")

    def stop_wildduck(self) -> None:
        _stop(self.procs.pop("wildduck", None))

    def stop(self) -> None:
        for name in ("wildduck", "redis", "mongo"):
            _stop(self.procs.pop(name, None))
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def missing_inbox(stack: WildDuckStack, user: str):
    """Takes a user's INBOX out of WildDuck's database for the block and puts it back:
    meanwhile WildDuck answers that recipient's LMTP DATA with 450 "Mailbox is missing"
    (a real per-recipient temporary failure) while the other recipients of the same
    transaction are stored."""
    import pymongo  # in the test extra
    from bson import ObjectId

    client = pymongo.MongoClient("127.0.0.1", stack.mongo_port, directConnection=True)
    try:
        mailboxes = client["wildduck"]["mailboxes"]
        doc = mailboxes.find_one({"user": ObjectId(user), "path": "INBOX"})
        assert doc is not None, f"WildDuck user {user} has no INBOX"
        mailboxes.delete_one({"_id": doc["_id"]})
        try:
            yield
        finally:
            mailboxes.insert_one(doc)
    finally:
        client.close()
