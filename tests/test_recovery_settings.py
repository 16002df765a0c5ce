"""How fast Postern recovers from a crash is set in config: the supervisor's restart
backoff cap and the outbound lease (how long a send whose process died waits before
the outbox retries it). Found by the crash-consistency runs: with the fixed 60 s cap
and 5 min lease, 20 kills took a quarter of an hour and every send cut by a kill
waited five minutes, with no way for an operator to choose otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.world import INFO, make_tenant

from postern.core.auth import authenticate
from postern.core.config import ConfigError, load_config
from postern.core.inboxes import create_inbox
from postern.core.mail import delivery, outbound
from postern.core.runtime import build_postern
from postern.supervisor import Child, Supervisor


def test_defaults_environment_and_bounds(tmp_path):
    config = load_config(environ={})
    assert config.server.restart_backoff_max == 60 and config.mail.outbound_lease_seconds == 300
    env = {"POSTERN_SERVER_RESTART_BACKOFF_MAX": "2", "POSTERN_MAIL_OUTBOUND_LEASE_SECONDS": "20"}
    config = load_config(environ=env)
    assert config.server.restart_backoff_max == 2 and config.mail.outbound_lease_seconds == 20
    for name, value in [("POSTERN_SERVER_RESTART_BACKOFF_MAX", "0"), ("POSTERN_MAIL_OUTBOUND_LEASE_SECONDS", "1")]:
        with pytest.raises(ConfigError, match=name.removeprefix("POSTERN_").lower().replace("_", ".", 1)):
            load_config(environ={name: value})


def _crashes(config, times: int) -> list[float]:
    """The restart delays the supervisor picks for a child that crashes at once, ``times``
    times over: a real process that exits, and the state written to the real database."""
    child = Child("flaky", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor = Supervisor(config, [child], None)
    delays = []
    for _ in range(times):
        child.proc = subprocess.Popen(child.argv)
        child.proc.wait()
        child.started_at = now = 1000.0  # crashed right after its start: counts towards the backoff
        supervisor._exited(child, now)
        delays.append(child.next_start - now)
    assert child.last_exit == "exit 3"
    return delays


def test_restart_backoff_doubles_up_to_the_configured_cap(config, db):
    assert _crashes(config, 8) == [1, 2, 4, 8, 16, 32, 60, 60]
    config.server.restart_backoff_max = 1
    assert _crashes(config, 4) == [1, 1, 1, 1]
    config.server.restart_backoff_max = 5
    assert _crashes(config, 5) == [1, 2, 4, 5, 5]


READY_THEN_EXIT = "import os; os.write(int(os.environ['POSTERN_SUPERVISOR_FD']), b'ready\\n'); raise SystemExit(3)"


def _deaths(supervisor: Supervisor, child: Child, times: int, kill: bool) -> list[float]:
    """Start ``child`` for real (with its notification pipe) ``times`` times; each run
    ends by itself or by SIGKILL; the restart delay the supervisor picks after each."""
    delays = []
    for _ in range(times):
        supervisor._start(child)
        if kill:
            child.proc.kill()
        child.proc.wait()
        now = 1000.0
        child.started_at = now - 0.5  # half a second after its start: young
        supervisor._read_notes(child, now)
        supervisor._exited(child, now)
        delays.append(child.next_start - now)
    return delays


def test_kills_and_deaths_after_serving_do_not_grow_the_backoff(config, db):
    """Before, every death within 30 s of a start doubled the delay, a kill of a serving
    listener included: five kills 2 s apart kept the SMTP port unserved for 16 s."""
    sleeper = Child("listener", [sys.executable, "-c", "import time; time.sleep(60)"])
    supervisor = Supervisor(config, [sleeper], None)
    assert _deaths(supervisor, sleeper, 6, kill=True) == [1.0] * 6
    assert "signal 9" in sleeper.reason and "killed: no failed start" in sleeper.reason
    served = Child("listener", [sys.executable, "-c", READY_THEN_EXIT])
    supervisor = Supervisor(config, [served], None)
    assert _deaths(supervisor, served, 6, kill=False) == [1.0] * 6
    assert served.reason.startswith("exit 3 after serving")
    # A failed start still backs off, from 1 s: the kills before did not grow it.
    failing = Child("listener", sleeper.argv)
    supervisor = Supervisor(config, [failing], None)
    _deaths(supervisor, failing, 2, kill=True)
    failing.argv = [sys.executable, "-c", "raise SystemExit(3)"]
    assert _deaths(supervisor, failing, 3, kill=False) == [1.0, 2.0, 4.0]
    assert "(3 failed start(s) in a row)" in failing.reason


def test_a_send_whose_process_dies_is_leased_for_the_configured_time(config, db):
    config.mail.outbound_lease_seconds = 7
    postern = build_postern(config)
    principal = authenticate(make_tenant("acme").agent_key(handle="bot").agent_key, "agent", INFO)
    inbox, _ = create_inbox(postern, principal, INFO, {"username": "bot"})
    # Stored, and the process "dies" before its first attempt.
    body = {"to": ["a@remote.example"], "text": "hi"}
    message, _ = outbound.send(postern, principal, INFO, inbox.id, body, attempt_now=False)
    assert message.status == "queued"
    claim = (message.next_attempt_at - message.received_at).total_seconds()
    assert 7 <= claim < 8  # the outbox takes it over after 7 s, not the old fixed 300 s
    assert delivery.deliver_due(postern) == 0  # still the sender's until then
