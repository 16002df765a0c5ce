"""The test harness's own server helpers: ports that are free for every protocol a
server binds, and the report a failed test gives of a ``postern serve`` it started."""

from __future__ import annotations

import socket

import pytest
from support.server import Server, _udp_free, free_port, kill_tree, post_mortem, wait_for

pytestmark = pytest.mark.slow


def test_free_port_is_free_for_tcp_and_udp_and_never_repeats():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))


def test_a_port_held_for_udp_is_not_free():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert not _udp_free(port)
    assert _udp_free(port)


def test_post_mortem_shows_the_log_every_process_and_its_stacks(env, tmp_path):
    server = Server(env, tmp_path)
    try:
        wait_for(lambda: (h := server.health()) and "smtp" in {s["name"] for s in h["services"]})
        report = post_mortem(server)
    finally:
        kill_tree(server)
    processes = report.split("--- its processes")[1]
    assert "started api" in report.split("--- its processes")[0]  # the log
    assert "serve --only api" in processes and "service run smtp" in processes
    # Each process's stacks follow it.
    supervisor, *stacks = processes.split("\n")[1:4]
    assert supervisor.startswith(f"{server.proc.pid} ")
    assert stacks[0].startswith("  Current thread") and stacks[1].startswith("    File ")
    assert post_mortem(server).endswith(f"none: it exited with {server.proc.returncode}")
