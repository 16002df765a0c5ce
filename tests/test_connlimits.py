"""postern.core.connlimits: who a connection counts against, and the two caps."""

from __future__ import annotations

import logging

import pytest

from postern.core.connlimits import PER_CLIENT, TOTAL, ConnectionLimiter, client_key


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("192.0.2.7", 4321), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 25, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 25, 0, 0), "2001:db8:1:2::/64"),  # same /64: same client
        (("::ffff:192.0.2.7", 25, 0, 0), "192.0.2.7"),  # IPv4-mapped: the IPv4 client
        (("fe80::1%eth0", 25, 0, 2), "fe80::/64"),
        ("", "local"),  # a Unix socket's peername
        (None, "local"),
    ],
)
def test_client_key(peer, key):
    assert client_key(peer) == key


def test_per_client_cap_leaves_room_for_others_and_total_cap_holds():
    limiter = ConnectionLimiter("test", total=5, per_client=2)
    a = ("10.0.0.1", 1)
    assert limiter.acquire(a) == ("10.0.0.1", None)
    assert limiter.acquire(a) == ("10.0.0.1", None)
    assert limiter.acquire(a) == ("10.0.0.1", PER_CLIENT)
    for host in ("10.0.0.2", "10.0.0.2", "10.0.0.3"):
        assert limiter.acquire((host, 1))[1] is None
    assert limiter.acquire(("10.0.0.4", 1)) == ("10.0.0.4", TOTAL)
    assert limiter.open == 5 and limiter.refused == 2
    limiter.release("10.0.0.1")
    assert limiter.acquire(a)[1] is None  # a freed slot is given out again


def test_release_forgets_clients_with_nothing_open():
    limiter = ConnectionLimiter("test", total=10_000, per_client=1)
    for i in range(1000):
        key, refused = limiter.acquire((f"10.0.{i // 256}.{i % 256}", 1))
        assert refused is None
        limiter.release(key)
    assert limiter.open == 0 and not limiter.by_client  # no memory kept per address seen


def test_per_client_zero_means_no_per_client_cap():
    limiter = ConnectionLimiter("test", total=3, per_client=0)
    assert [limiter.acquire(("10.0.0.1", 1))[1] for _ in range(4)] == [None, None, None, TOTAL]


def test_refusals_are_logged_in_batches_not_one_line_each(caplog):
    limiter = ConnectionLimiter("test", total=1, per_client=1)
    limiter.acquire(("10.0.0.1", 1))
    with caplog.at_level(logging.WARNING, logger="postern.connlimits"):
        for _ in range(500):
            limiter.acquire(("10.0.0.2", 1))
    assert len(caplog.records) == 1 and limiter.refused == 500
