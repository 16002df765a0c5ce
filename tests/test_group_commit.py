"""The group committer: concurrent writers share commits, and each is answered only
with what really committed."""

from __future__ import annotations

import asyncio

import peewee
import pytest
from support.world import INFO, make_tenant

from postern.core.auth import authenticate
from postern.core.db import GroupCommitter, database
from postern.core.inboxes import create_inbox
from postern.core.mail.ingest import store
from postern.core.mail.mime import MailLimits, MailRejected, parse
from postern.core.models import Message
from postern.core.runtime import build_postern


@pytest.fixture
def inbox(config, db):
    postern = build_postern(config)
    agent = make_tenant("acme").agent_key()
    box, _ = create_inbox(postern, authenticate(agent.agent_key, "agent", INFO), INFO, {"username": "box"})
    box.postern = postern  # store() queues webhook deliveries, so it takes the postern
    return box


def raw(n: int) -> bytes:
    return f"Subject: m{n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nbody {n}\r\n".encode()


def store_one(inbox, n: int):
    return store(inbox.postern, parse(raw(n), MailLimits()), raw(n), "a@example.org", [inbox.address])


async def submit_all(committer, jobs):
    return await asyncio.gather(
        *(committer.run(fn, *args, after=after) for fn, args, after in jobs), return_exceptions=True
    )


def test_concurrent_writers_share_commits_and_all_are_stored(inbox):
    committer, announced = GroupCommitter(), []
    jobs = [(store_one, (inbox, n), announced.extend) for n in range(40)]
    try:
        results = asyncio.run(submit_all(committer, jobs))
    finally:
        committer.shutdown()
    assert all(isinstance(r, list) and len(r) == 1 for r in results)
    assert Message.select().count() == 40
    assert sorted(m.seq for m in Message.select()) == list(range(1, 41))  # one seq each, none lost
    assert len(announced) == 40  # every job's after-commit step ran
    assert committer.commits < 40  # jobs queued during a commit joined a shared transaction


def test_a_failing_job_is_rolled_back_alone(inbox):
    committer = GroupCommitter()

    def half_then_fail():
        store_one(inbox, 999)  # written, then taken back by the job's savepoint
        raise MailRejected("refused for the test", smtp_code="554 5.6.0", code="test")

    jobs = [(store_one, (inbox, 1), None), (half_then_fail, (), None), (store_one, (inbox, 2), None)]
    try:
        results = asyncio.run(submit_all(committer, jobs))
    finally:
        committer.shutdown()
    assert isinstance(results[1], MailRejected)
    assert [type(r) for r in (results[0], results[2])] == [list, list]
    assert sorted(m.subject for m in Message.select()) == ["m1", "m2"]


def test_a_failed_commit_answers_every_job_with_the_error(inbox, monkeypatch):
    committer, announced = GroupCommitter(), []
    real_commit = type(database.obj).commit

    def failing_commit(self):
        raise peewee.OperationalError("disk I/O error")

    monkeypatch.setattr(type(database.obj), "commit", failing_commit)
    jobs = [(store_one, (inbox, n), announced.extend) for n in range(5)]
    try:
        results = asyncio.run(submit_all(committer, jobs))
    finally:
        monkeypatch.setattr(type(database.obj), "commit", real_commit)
        committer.shutdown()
    assert all(isinstance(r, peewee.OperationalError) for r in results)
    assert announced == []  # nothing announced that did not commit
    assert Message.select().count() == 0


def test_concurrent_reads_share_audit_commits_and_each_is_audited_before_its_answer(config, db, monkeypatch):
    import falcon.testing

    from postern.api import calls, create_app
    from postern.core.models import AuditEvent

    made = []

    class Recorded(GroupCommitter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(calls, "GroupCommitter", Recorded)
    postern = build_postern(config)
    agent = make_tenant("acme").agent_key()
    box, _ = create_inbox(postern, authenticate(agent.agent_key, "agent", INFO), INFO, {"username": "box"})
    app = create_app(postern)
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    listed = AuditEvent.select().where(AuditEvent.action == "message.list", AuditEvent.target == box.id)

    async def many():
        async with falcon.testing.ASGIConductor(app) as conductor:
            calls = [conductor.simulate_get(f"/v1/inboxes/{box.id}/messages", headers=headers) for _ in range(30)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(many())
    assert [a.status_code for a in answers] == [200] * 30
    assert listed.count() == 30  # every read audited, each before its answer was sent
    [committer] = made
    assert committer.commits >= 1  # the rows were written by the group committer, not by the readers
