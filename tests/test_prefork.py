"""The SMTP listener in several processes (``[receive.smtp_local] processes``): one
socket bound once, every process accepting and storing, a dead one replaced, all of
them gone when the service stops or its parent dies."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from support.server import free_port, seeding, smtp_greets, wait_for
from support.world import make_tenant

from postern.core.db import database
from postern.core.models import Message
from postern.core.smtp import prefork
from postern.plugins.smtp_local.receiver import SmtpLocalReceiver

pytestmark = pytest.mark.slow
PROCESSES = 2


@pytest.fixture
def live(serve, db_url):
    with seeding(db_url):
        enrolled = make_tenant("acme").agent_key(handle="support", max_mailboxes=5)
    server = serve(smtp_options=f"processes = {PROCESSES}\n")
    wait_for(lambda: len(listeners(server)["children"]) == PROCESSES and smtp_greets(server.smtp_port))
    resp = httpx.post(
        f"{server.url}/v1/inboxes",
        json={"username": "box"},
        headers={"Authorization": f"Bearer {enrolled.agent_key}"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    server.address = resp.json()["address"]
    return server


def listeners(server) -> dict:
    """The SMTP service's parent process and its forked children."""
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if "smtp" in proc.cmdline() and proc.parent().pid == server.proc.pid:
                return {"parent": proc, "children": proc.children()}
        except psutil.NoSuchProcess:
            continue
    return {"parent": None, "children": []}


def send(port: int, address: str, n: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("a@example.org", [address], f"Subject: m{n}\r\n\r\nbody {n}\r\n".encode())
        return n


def stored_subjects() -> list[str]:
    with database.connection_context():
        return sorted(m.subject for m in Message.select(Message.subject))


def serving_pids(server, connections: int) -> set[int]:
    """Which listener processes accept: hold ``connections`` open at once and ask the
    kernel which process owns the server end of each."""
    clients = [smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) for _ in range(connections)]
    try:
        mine = {c.sock.getsockname()[1] for c in clients}
        owners = set()
        for child in listeners(server)["children"]:
            for conn in child.net_connections("tcp"):
                if conn.raddr and conn.raddr.port in mine:
                    owners.add(child.pid)
        return owners
    finally:
        for client in clients:
            client.close()


def test_every_process_accepts_and_every_message_is_stored_once(live):
    family = listeners(live)
    assert len(family["children"]) == PROCESSES
    # Several connections open together are spread over the processes by the kernel.
    assert wait_for(lambda: len(serving_pids(live, 16)) == PROCESSES, timeout=20)
    with ThreadPoolExecutor(8) as pool:
        sent = sorted(pool.map(lambda n: send(live.smtp_port, live.address, n), range(60)))
    assert sent == list(range(60))
    assert stored_subjects() == sorted(f"m{n}" for n in range(60))


def test_a_killed_process_is_replaced_and_nothing_is_lost(live):
    family = listeners(live)
    victim = family["children"][0]
    victim.kill()
    victim.wait(10)
    # Mail sent while one process is gone is taken by the other, from the shared queue.
    for n in range(10):
        send(live.smtp_port, live.address, n)
    wait_for(lambda: len(listeners(live)["children"]) == PROCESSES, timeout=20)
    now = listeners(live)
    assert now["parent"].pid == family["parent"].pid  # the service itself did not restart
    assert victim.pid not in {c.pid for c in now["children"]}
    for n in range(10, 20):
        send(live.smtp_port, live.address, n)
    assert stored_subjects() == sorted(f"m{n}" for n in range(20))
    assert "restarting in" in live.output()


def test_killed_listener_processes_are_replaced_promptly_however_often(live):
    """Kills from outside do not grow the parent's backoff: before, it doubled from
    0.5 s per death (to 30 s), so the sixth kill of every child left the port listening
    (the parent holds the socket) with no process greeting for 16 s."""
    bound = prefork.BACKOFF_START + prefork.POLL + 5.0  # + fork and start-up on a loaded machine
    for _ in range(6):
        children = listeners(live)["children"]
        for child in children:
            child.kill()
        psutil.wait_procs(children, timeout=10)
        killed = time.monotonic()
        wait_for(lambda: len(listeners(live)["children"]) == PROCESSES and smtp_greets(live.smtp_port), timeout=60)
        assert time.monotonic() - killed <= bound
    send(live.smtp_port, live.address, 1)
    assert stored_subjects() == ["m1"]
    assert "no listener process is accepting until then" in live.output()


def test_children_die_with_a_killed_parent_and_the_service_comes_back(live):
    family = listeners(live)
    children = family["children"]
    family["parent"].kill()  # SIGKILL: no chance to stop its children itself
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, "a listener process outlived its parent (PR_SET_PDEATHSIG)"
    # The supervisor restarts the service, which binds the port again: nothing held it.
    wait_for(lambda: (now := listeners(live))["parent"] is not None and len(now["children"]) == PROCESSES, timeout=30)
    wait_for(lambda: smtp_greets(live.smtp_port), timeout=20)
    send(live.smtp_port, live.address, 1)
    assert stored_subjects() == ["m1"]


def test_stopping_serve_stops_every_listener_process(live):
    family = listeners(live)
    procs = [family["parent"], *family["children"]]
    assert live.stop(signal.SIGTERM) == 0
    gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive


def test_a_taken_port_fails_the_service_loudly(env, tmp_path, db_url):
    """The socket is bound once, before forking: a port already in use is an error,
    never a port silently shared (which ``SO_REUSEPORT`` would allow)."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        config = tmp_path / "postern.toml"
        config.write_text(f'[receive.smtp_local]\nbind = "127.0.0.1:{port}"\nprocesses = 2\n')
        done = subprocess.run(
            [sys.executable, "-m", "postern", "--config", str(config), "service", "run", "smtp"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert "Address already in use" in done.stderr


@pytest.mark.parametrize("value", [0, -1, 65, "2", True])
def test_processes_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="processes"):
        SmtpLocalReceiver.from_config({"processes": value})
