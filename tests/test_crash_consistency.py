"""Crash consistency, the fast version: each scenario of tests/support/crash.py with a
few SIGKILLs, on whichever database the suite runs on. The long version (20 kills per
scenario, figures printed) is bench/crash_consistency.py, or ``tox -e reliability``."""

from __future__ import annotations

import pytest
from support import crash

pytestmark = pytest.mark.slow
KNOBS = crash.Knobs(kills=3, clients=3, pace=0.03, gap=(0.3, 1.5), raw_sample=10)


@pytest.mark.parametrize("scenario", ["smtp_listener", "smtp_processes", "whole_serve"])
def test_every_250_is_stored_once_byte_exact_and_readable(scenario, db_url, tmp_path):
    row = crash.run(scenario, db_url, tmp_path, KNOBS)
    print("\n" + crash.table([row]))
    assert row.kills == KNOBS.kills
    assert row.acknowledged > 0
    assert (row.lost, row.duplicated, row.altered) == (0, 0, 0), crash.report(row)
    assert row.notes["unreadable"] == 0
    assert "stored, never sent" not in row.notes
    assert "stored for only some recipients" not in row.notes  # one transaction for all of them


def test_every_accepted_send_ends_sent_at_the_relay(db_url, tmp_path):
    row = crash.run("api_sends", db_url, tmp_path, KNOBS)
    print("\n" + crash.table([row]))
    assert row.kills == KNOBS.kills and row.acknowledged > 0
    assert row.notes["stuck"] == 0, crash.report(row)  # queued after restart means sent or failed later
    assert row.notes["failed"] == 0  # the relay always answers 250: nothing may end failed
    assert (row.lost, row.altered) == (0, 0), crash.report(row)
    assert row.notes["stored twice"] == 0  # a cut send retried with its Idempotency-Key replays
    # At-least-once: only an attempt cut between the relay's 250 and the commit of
    # `sent` is relayed again.
    assert row.duplicated <= KNOBS.kills * (KNOBS.clients + 1)  # in flight: each client, and the outbox
    assert "relayed twice without a kill between" not in row.notes, crash.report(row)  # two live attempts


def test_every_webhook_delivery_succeeds_despite_killed_dispatchers(db_url, tmp_path):
    row = crash.run("webhooks", db_url, tmp_path, KNOBS)
    print("\n" + crash.table([row]))
    assert row.kills == KNOBS.kills and row.acknowledged > 0
    assert row.notes["smtp acked without a delivery"] == 0
    assert (row.lost, row.altered, row.notes["stuck"]) == (0, 0, 0), crash.report(row)
    # At-least-once: only attempts in flight at a kill are repeated (concurrency 8).
    assert row.duplicated <= KNOBS.kills * 8
