"""Keys that outlive a day (issue 19 item 5): a client given an enrollment key renews
its agent key before it expires, and on ``key_expired``, never on ``key_revoked``.

The long test runs an SDK client and a real MCP client (stdio) together for several
agent-key lifetimes against a real `postern serve` with a short key TTL. It is marked
``long`` (deselect with ``-m "not long"``, e.g. on PostgreSQL when time is short);
POSTERN_TEST_KEY_TTL and POSTERN_TEST_RENEWAL_SECONDS change its 60 s TTL and 210 s run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from support.server import Server, kill_tree
from support.world import INFO, make_tenant

from postern.api import create_app
from postern.client import Postern, bootstrap, errors
from postern.core import enrollment, migrations
from postern.core.db import database, open_database
from postern.core.models import AgentKey, AuditEvent, utcnow
from postern.core.principal import CLI
from postern.core.runtime import build_postern
from postern.testing.inprocess import InProcessTransport

TTL = int(os.environ.get("POSTERN_TEST_KEY_TTL", "60"))
RUN_SECONDS = float(os.environ.get("POSTERN_TEST_RENEWAL_SECONDS", "210"))
BASE = "http://postern.test"


@pytest.fixture
def served(config, db):
    config.auth.agent_key_ttl_seconds = 60
    transport = InProcessTransport(create_app(build_postern(config)))
    yield transport
    transport.shutdown()


def keys_of(agent_id: str) -> int:
    return AgentKey.select().where(AgentKey.agent == agent_id).count()


def test_first_call_enrolls_and_key_expired_renews_the_same_agent(served):
    _, token = make_tenant("acme").enrollment_key(max_redemptions=1)
    client = Postern(enrollment_key=token, agent_handle="bot", base_url=BASE, transport=served)
    assert token not in repr(client) and client.api_key == ""
    me = client.me()  # redeems first
    assert me.agent_handle == "bot" and keys_of(me.agent_id) == 1
    AgentKey.update(expires_at=utcnow()).where(AgentKey.agent == me.agent_id).execute()
    again = client.me()  # key_expired: renewed, and the call made again
    assert again.agent_id == me.agent_id and again.key_prefix != me.key_prefix and keys_of(me.agent_id) == 2
    renewed = client.enroll()
    assert renewed.renewed and renewed.agent_id == me.agent_id and keys_of(me.agent_id) == 3


def test_key_revoked_is_never_renewed(served):
    acme = make_tenant("acme")
    _, token = acme.enrollment_key()
    client = Postern(enrollment_key=token, agent_handle="bot", base_url=BASE, transport=served)
    me = client.me()
    AgentKey.update(revoked_at=utcnow()).where(AgentKey.agent == me.agent_id).execute()
    with pytest.raises(errors.AuthenticationFailed) as exc:
        client.me()
    assert exc.value.code == "key_revoked" and keys_of(me.agent_id) == 1


def test_renews_before_expiry_without_an_error(served):
    _, token = make_tenant("acme").enrollment_key()
    client = Postern(enrollment_key=token, agent_handle="bot", base_url=BASE, transport=served, renew_before=0.98)
    first = client.me()
    time.sleep(1.5)  # past 2% of the 60 s lifetime: due
    second = client.me()
    assert second.key_prefix != first.key_prefix and keys_of(first.agent_id) == 2
    assert not AuditEvent.select().where(AuditEvent.code == "key_expired").count()  # renewed, not refused


def test_enrollment_credential_from_the_environment(served, monkeypatch):
    _, token = make_tenant("acme").enrollment_key()
    monkeypatch.setenv("POSTERN_ENROLLMENT_KEY", token)
    monkeypatch.setenv("POSTERN_AGENT_HANDLE", "env-bot")
    monkeypatch.delenv("POSTERN_API_KEY", raising=False)
    assert Postern(base_url=BASE, transport=served).me().agent_handle == "env-bot"
    monkeypatch.delenv("POSTERN_AGENT_HANDLE")
    with pytest.raises(ValueError, match="agent_handle is required"):
        Postern(base_url=BASE, transport=served)
    with pytest.raises(ValueError, match="renew_before"):
        Postern(enrollment_key=token, agent_handle="x", renew_before=1.0, base_url=BASE, transport=served)


def test_a_revoked_enrollment_key_ends_the_client(served):
    acme = make_tenant("acme")
    row, token = acme.enrollment_key()
    client, _ = bootstrap.enrolled(token, "bot", base_url=BASE, transport=served)
    enrollment.revoke_enrollment_key(CLI, INFO, row.id, revoke_agent_keys=True)
    with pytest.raises(errors.AuthenticationFailed) as exc:
        client.me()
    assert exc.value.code == "key_revoked"


def test_mcp_takes_the_enrollment_credential_from_its_env_block():
    from test_mcp import ok, stdio

    from postern.testing import MOCK_ENROLLMENT_TOKEN

    async def run():
        env = {"POSTERN_MOCK": "1", "POSTERN_ENROLLMENT_KEY": MOCK_ENROLLMENT_TOKEN, "POSTERN_AGENT_HANDLE": "env-bot"}
        async with stdio(env) as client:
            assert (await ok(client, "whoami"))["agent_handle"] == "env-bot"  # no redeem_enrollment call

    asyncio.run(run())


def test_postern_mcp_refuses_an_enrollment_key_without_a_handle():
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
    env.update(POSTERN_ENROLLMENT_KEY="pk_enroll_x", POSTERN_API_BASE_URL="http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "postern", "mcp"], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    assert done.returncode == 1 and b"POSTERN_ENROLLMENT_KEY needs POSTERN_AGENT_HANDLE" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.fixture
def live(env, tmp_path, db_url):
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        _, token = make_tenant("acme").enrollment_key(max_redemptions=2)
    server = Server({**env, "POSTERN_AUTH_AGENT_KEY_TTL_SECONDS": str(TTL)}, tmp_path)
    server.enroll = token
    from support.server import wait_for

    wait_for(lambda: (h := server.health()) and h.get("status") == "ok")
    yield server
    kill_tree(server)


@pytest.mark.slow
@pytest.mark.long
def test_sdk_and_mcp_clients_outlive_several_key_lifetimes(live):
    from test_mcp import ok, stdio

    failures: list[str] = []
    sdk_agents, sdk_prefixes = set(), set()
    stop = threading.Event()

    def sdk_loop():
        client = Postern(enrollment_key=live.enroll, agent_handle="sdk-bot", base_url=live.url)
        with client:
            while not stop.is_set():
                try:
                    me = client.me()
                    sdk_agents.add(me.agent_id)
                    sdk_prefixes.add(me.key_prefix)
                    client.inboxes.page(limit=1)
                except errors.PosternError as exc:
                    failures.append(f"sdk: {exc}")
                stop.wait(2)

    async def mcp_loop() -> tuple[set, set]:
        agents, prefixes = set(), set()
        env = {"POSTERN_API_BASE_URL": live.url, "POSTERN_ENROLLMENT_KEY": live.enroll, "POSTERN_AGENT_HANDLE": "mcp"}
        async with stdio(env) as client:
            deadline = time.monotonic() + RUN_SECONDS
            while time.monotonic() < deadline:
                me = await ok(client, "whoami")  # no redeem_enrollment: the env credential is enough
                agents.add(me["agent_id"])
                prefixes.add(me["key_prefix"])
                await ok(client, "list_inboxes")
                await asyncio.sleep(2)
        return agents, prefixes

    thread = threading.Thread(target=sdk_loop)
    thread.start()
    try:
        mcp_agents, mcp_prefixes = asyncio.run(mcp_loop())
    finally:
        stop.set()
        thread.join()
    assert failures == []
    lifetimes = int(RUN_SECONDS // TTL)
    assert len(sdk_agents) == 1 and len(sdk_prefixes) >= lifetimes + 1, sdk_prefixes
    assert len(mcp_agents) == 1 and len(mcp_prefixes) >= lifetimes + 1, mcp_prefixes
    with database.connection_context():
        expired = AuditEvent.select().where(AuditEvent.code == "key_expired").count()
        renewals = AuditEvent.select().where(AuditEvent.action == "enroll.renew").count()
    assert expired == 0  # renewed before expiry, never refused
    assert renewals >= 2 * lifetimes  # within max_redemptions=2: renewals are not counted
