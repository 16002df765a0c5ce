"""The hand-written hot-path SQL gives exactly what peewee's own queries give, on both databases."""

from __future__ import annotations

import pytest
from support.world import INFO, make_tenant

from postern.core import audit, fastsql
from postern.core.auth import authenticate
from postern.core.inboxes import create_inbox
from postern.core.mail.ingest import ingest
from postern.core.models import AgentKey, Attachment, AuditEvent, Inbox, Message
from postern.core.runtime import build_postern

RAW = (
    "From: Ann <ann@example.org>\r\nTo: {to}\r\nCc: Bo <bo@example.org>\r\nSubject: hi\r\n"
    "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m{n}@example.org>\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
    '--b\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename="a.png"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n"
)


@pytest.fixture
def stored(config, db):
    postern = build_postern(config)
    enrolled = make_tenant("acme").agent_key(handle="bot")
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    inbox, _ = create_inbox(postern, principal, INFO, {"username": "bot"})
    for n in range(3):
        ingest(postern, RAW.format(to=inbox.address, n=n).encode(), "ann@example.org", [inbox.address])
    return inbox


def same_rows(model, fields, fast_rows, peewee_rows):
    assert len(fast_rows) == len(peewee_rows) > 0
    for fast, slow in zip(fast_rows, peewee_rows, strict=True):
        assert type(fast) is model
        for f in fields:
            got, want = getattr(fast, f.name), getattr(slow, f.name)
            assert got == want and type(got) is type(want), f.name
        assert not fast.dirty_fields  # a save() would write nothing it was not told to


def test_selects_match_peewee_field_for_field(stored):
    summary = fastsql.all_fields(Message, without=("raw", "text", "html", "headers"))
    fast = fastsql.select(Message, summary, "WHERE inbox_id = ? ORDER BY seq DESC LIMIT ?", (stored.id, 10))
    slow = list(Message.select(*summary).where(Message.inbox == stored.id).order_by(Message.seq.desc()))
    same_rows(Message, summary, fast, slow)
    assert isinstance(fast[0].received_at, type(slow[0].received_at)) and fast[0].local_done is False

    meta = fastsql.all_fields(Attachment, without=("data",))
    ids = [m.id for m in fast]
    fast_att = fastsql.select(Attachment, meta, f"WHERE message_id IN ({', '.join('?' * len(ids))}) ORDER BY id", ids)
    slow_att = list(Attachment.select(*meta).where(Attachment.message.in_(ids)).order_by(Attachment.id))
    same_rows(Attachment, meta, fast_att, slow_att)
    assert fast_att[0].inline is True

    key_fields = fastsql.all_fields(AgentKey)
    fast_key = fastsql.select_one(AgentKey, key_fields, "WHERE id IS NOT NULL")
    same_rows(AgentKey, key_fields, [fast_key], [AgentKey.get_by_id(fast_key.id)])


def test_select_one_of_nothing_is_none_and_params_are_bound_not_spliced(stored):
    fields = fastsql.all_fields(Inbox)
    assert fastsql.select_one(Inbox, fields, "WHERE id = ?", ("inb_nope' OR '1'='1",)) is None
    assert fastsql.select_one(Inbox, fields, "WHERE id = ?", (stored.id,)).address == stored.address


def test_audit_insert_reads_back_through_peewee(stored):
    before = AuditEvent.select().count()
    audit.record("probe.action", principal=None, info=INFO, outcome="denied", target="x\ny", code="nope")
    row = AuditEvent.select().order_by(AuditEvent.id.desc()).first()
    assert AuditEvent.select().count() == before + 1
    assert (row.action, row.actor, row.outcome, row.code, row.target) == (
        "probe.action",
        "anonymous",
        "denied",
        "nope",
        "x\\ny",
    )
    assert row.request_id == INFO.request_id and row.at is not None


def test_summary_attachment_counts_match_the_attachment_rows(stored, config):
    """Listings count attachments in one grouped query; the count is the rows' count."""
    from postern.core.mail.messageview import with_attachment_counts, with_attachments
    from postern.core.mail.reading import list_messages
    from postern.core.principal import CLI

    plain = RAW.split('Content-Type: multipart/mixed; boundary="b"')[0].format(to=stored.address, n=9) + "\r\nplain\r\n"
    ingest(build_postern(config), plain.encode(), "ann@example.org", [stored.address])
    messages = list(Message.select().where(Message.inbox == stored.id))
    counted = {v.message.id: v.attachment_count for v in with_attachment_counts(messages)}
    listed = {v.message.id: len(v.attachments) for v in with_attachments(messages)}
    assert counted == listed and sorted(counted.values()) == [0, 1, 1, 1]
    assert with_attachment_counts([]) == []
    with audit.deferring_reads():
        page = list_messages(CLI, INFO, stored.id, {}, None, None)
    assert {v.message.id: v.attachment_count for v in page.items} == listed


def test_select_each_is_select_per_parameter_list_with_each_limit_and_order(stored, config):
    """One UNION ALL statement answers like one select per list: each part keeps its own
    LIMIT and order, an empty part stays empty, the same table twice with different
    cursors stays apart, and values are bound, never spliced."""
    from postern.core.mail import reading

    enrolled = make_tenant("other").agent_key(handle="bot2")
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    second, _ = create_inbox(build_postern(config), principal, INFO, {"username": "bot2"})
    ingest(build_postern(config), RAW.format(to=second.address, n=7).encode(), "ann@example.org", [second.address])
    fields, tail = reading._SUMMARY_FIELDS, "WHERE inbox_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    params_each = [
        (stored.id, 0, 2),
        (second.id, 0, 50),
        ("inb_nope' OR '1'='1", 0, 50),
        (stored.id, 1, 50),
        (stored.id, 99, 50),
    ]
    nothing = ("", 0, 0)
    each = fastsql.select_each(Message, fields, tail, params_each, "seq", nothing)
    assert [len(rows) for rows in each] == [2, 1, 0, 2, 0]
    for params, rows in zip(params_each, each, strict=True):
        if rows:
            same_rows(Message, fields, rows, fastsql.select(Message, fields, tail, params))
    assert [m.seq for m in each[3]] == sorted(m.seq for m in each[3])
    assert fastsql.select_each(Message, fields, tail, [params_each[0]], "seq", nothing)[0][0].id == each[0][0].id
    # More lists than one statement's parts: several statements, the last one padded.
    many = [params_each[n % len(params_each)] for n in range(2 * fastsql.EACH_PARTS + 3)]
    chunked = fastsql.select_each(Message, fields, tail, many, "seq", nothing)
    assert [[m.id for m in rows] for rows in chunked] == [[m.id for m in each[n % len(each)]] for n in range(len(many))]

    # inbound_after_each: per read, the same answer as inbound_after, in two statements.
    reads = [(stored.id, 0, 2), (second.id, 0, 50), (stored.id, 3, 50)]
    together = reading.inbound_after_each(reads)
    alone = [reading.inbound_after(*read) for read in reads]
    shape = [([v.message.id for v in views], [v.attachment_count for v in views], cursor) for views, cursor in together]
    assert shape == [([v.message.id for v in views], [v.attachment_count for v in views], c) for views, c in alone]
    assert [len(views) for views, _ in together] == [2, 1, 0] and together[2][1] == 3  # nothing new: cursor kept
    assert together[0][0][0].attachment_count == 1


def test_a_page_of_only_sent_mail_moves_the_wait_cursor_and_shows_nothing(stored, config):
    """inbound_after_each, like inbound_after: the inbox's own sent mail advances the
    cursor without being returned."""
    from postern.core.mail import reading

    last = max(m.seq for m in Message.select().where(Message.inbox == stored.id))
    Message.update(direction="outbound").where((Message.inbox == stored.id) & (Message.seq == last)).execute()
    together = reading.inbound_after_each([(stored.id, last - 1, 50), (stored.id, 0, 50)])
    assert [([v.message.seq for v in views], cursor) for views, cursor in together] == [
        ([], last),
        ([m.seq for m in Message.select().where(Message.inbox == stored.id).order_by(Message.seq)][:-1], last),
    ]
    assert reading.inbound_after(stored.id, last - 1, 50) == ([], last)
