"""The data directory is its user's alone: 0700, every file in it 0600 (sockets without
group or other bits), whatever the shell's umask; after `postern init`, while and after
`postern serve` receives mail, and an older install's 0644 files are tightened at start
with a log line saying what changed. Real processes, started with umask 022."""

from __future__ import annotations

import os
import signal
import smtplib
import stat
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
from support.dns import free_udp_and_tcp_port
from support.server import free_port, wait_for

from postern.core import migrations
from postern.core.db import database, open_database

SQLITE_FILES = ("postern.db", "postern.db-wal", "postern.db-shm", "postern.db-writer.lock")


def postern(*args, env, **kwargs):
    """Run ``python -m postern ARGS`` as an operator's shell would, with umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "postern", *args],
        env=env,
        preexec_fn=lambda: os.umask(0o022),
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def base_env(db_url):
    env = {k: v for k, v in os.environ.items() if k not in ("POSTERN_CONFIG", "POSTERN_DATA_DIR")}
    env.pop("POSTERN_DATABASE_URL", None)
    if not db_url.startswith("sqlite"):
        env["POSTERN_DATABASE_URL"] = db_url  # the data dir still holds the DKIM key and sockets
    return env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def assert_private(data_dir: Path, sqlite: bool) -> list[Path]:
    """Every entry under ``data_dir`` has no group or other bits; the ones Postern writes
    have the exact modes. Returns what was looked at, for the caller to check it is there."""
    assert mode(data_dir) == 0o700
    seen = [data_dir]
    for directory, dirnames, filenames in os.walk(data_dir):
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            seen.append(path)
            kind = path.lstat().st_mode
            assert stat.S_IMODE(kind) & 0o077 == 0, f"{path} is {stat.S_IMODE(kind):04o}"
            if stat.S_ISDIR(kind):
                assert stat.S_IMODE(kind) == 0o700, path
            elif stat.S_ISREG(kind):
                assert stat.S_IMODE(kind) == 0o600, path
    if sqlite:
        for name in ("postern.db",):
            assert data_dir / name in seen
    return seen


def start_serve(env: dict, config_file: Path, log: Path) -> tuple[subprocess.Popen, dict]:
    ports = {"api": free_port(), "smtp": free_port(), "dns": free_udp_and_tcp_port()}
    env = {
        **env,
        "POSTERN_CONFIG": str(config_file),
        "POSTERN_SERVER_BIND": f"127.0.0.1:{ports['api']}",
        "POSTERN_SERVER_WORKERS": "2",
        # Backend options from the environment (README "Configuration"), as an operator sets them.
        "POSTERN_RECEIVE_SMTP_LOCAL_BIND": f"127.0.0.1:{ports['smtp']}",
        "POSTERN_DNS_DNS_BUILTIN_BIND": f"127.0.0.1:{ports['dns']}",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postern", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(0o022),
        )
    url = f"http://127.0.0.1:{ports['api']}"

    def healthy():
        if proc.poll() is not None:
            raise AssertionError(f"postern serve exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and _accepts(ports["smtp"])
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90)
    return proc, {**ports, "url": url}


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_init_and_serve_keep_every_file_private(tmp_path, base_env, db_url):
    sqlite = db_url.startswith("sqlite")
    site = tmp_path / "site"
    done = postern("init", str(site), env=base_env)
    assert done.returncode == 0, done.stderr
    data_dir, config_file = site / "postern-data", site / "postern.toml"
    assert mode(config_file) == 0o600
    assert_private(data_dir, sqlite)

    env = {**base_env, "POSTERN_CONFIG": str(config_file)}
    assert postern("admin", "customer", "create", "--label", "acme", env=env).returncode == 0
    created = postern(
        "admin", "enroll-key", "create", "--customer", "acme", "--scopes", "mailbox:create,mailbox:read",
        "--max-mailboxes", "1", env=env,
    )  # fmt: skip
    enrollment_key = created.stdout.split()[0]
    proc, ports = start_serve(base_env, config_file, tmp_path / "serve.log")
    try:
        enrolled = httpx.post(
            f"{ports['url']}/v1/enroll", json={"enrollment_token": enrollment_key, "agent_handle": "a"}, timeout=60
        )
        auth = {"Authorization": f"Bearer {enrolled.json()['agent_key']}"}
        inbox = httpx.post(f"{ports['url']}/v1/inboxes", json={"username": "sales"}, headers=auth, timeout=60).json()
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=60) as client:
            client.sendmail("a@example.org", [inbox["address"]], b"Subject: modes\r\n\r\nhello\r\n")
        waited = httpx.get(
            f"{ports['url']}/v1/inboxes/{inbox['id']}/messages/wait?after=0&timeout=30", headers=auth, timeout=60
        ).json()
        assert [m["subject"] for m in waited["messages"]] == ["modes"]
        # The tenant's DKIM key (and the key sealing it, in the data dir) is made on first
        # need: here the operator's zone listing; then the running DNS server publishes it.
        domain = inbox["address"].split("@")[1]
        listed = postern("admin", "dns", "records", domain, env=env)
        assert listed.returncode == 0 and "_domainkey" in listed.stdout, listed.stderr
        query = dns.message.make_query(f"postern._domainkey.{domain}", "TXT")
        answer = wait_for(lambda: dns.query.udp(query, "127.0.0.1", port=ports["dns"], timeout=5).answer, timeout=60)
        assert answer
        seen = assert_private(data_dir, sqlite)  # while it runs: the -wal and -shm exist now
        expected = [data_dir / "secrets", data_dir / "secrets" / "dkim.key"]
        if sqlite:
            expected += [data_dir / name for name in SQLITE_FILES]
        assert set(expected) <= set(seen), sorted(set(expected) - set(seen))
    finally:
        stop(proc)
    assert_private(data_dir, sqlite)


def test_an_older_install_is_tightened_at_start(tmp_path, base_env, db_url):
    """Files an older Postern left world-readable are made private by the next start,
    which says in its log what it changed."""
    sqlite = db_url.startswith("sqlite")
    site = tmp_path / "site"
    assert postern("init", str(site), env=base_env).returncode == 0
    data_dir, config_file = site / "postern-data", site / "postern.toml"
    (data_dir / "secrets").mkdir()
    (data_dir / "secrets" / "dkim.key").write_text("ab" * 32)
    loosened = [data_dir / "secrets" / "dkim.key"]
    if sqlite:
        open_database(f"sqlite:///{data_dir / 'postern.db'}")
        with database.connection_context():
            migrations.upgrade()
        loosened.append(data_dir / "postern.db")
    for path in loosened:
        path.chmod(0o644)
    for path in (data_dir, data_dir / "secrets"):
        path.chmod(0o755)

    proc, _ = start_serve(base_env, config_file, tmp_path / "serve.log")
    try:
        assert_private(data_dir, sqlite)
    finally:
        stop(proc)
    log = (tmp_path / "serve.log").read_text()
    assert "file(s) in the data directory private to this user" in log
    for path in loosened:
        assert f"{path} 0644->0600" in log
    assert f"{data_dir} 0755->0700" in log


def test_init_tightens_an_existing_data_dir(tmp_path, base_env):
    site = tmp_path / "site"
    assert postern("init", str(site), env=base_env).returncode == 0
    data_dir = site / "postern-data"
    data_dir.chmod(0o755)
    (data_dir / "leftover").write_text("")
    (data_dir / "leftover").chmod(0o666)
    done = postern("init", "--force", str(site), env=base_env)
    assert done.returncode == 0, done.stderr
    assert f"{data_dir / 'leftover'} 0666->0600" in done.stderr and f"{data_dir} 0755->0700" in done.stderr
    assert_private(data_dir, sqlite=False)
