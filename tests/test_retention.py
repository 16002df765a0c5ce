"""Message retention (docs/retention.md): per customer and per inbox, set by admins
(``/v1/admin/retention``, ``/v1/admin/inboxes/{id}/retention``, ``postern admin
retention``), and the sweep that deletes expired mail in batches, audited once per batch."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from support.world import make_tenant, operator_token, seed_inbox

from postern.cli import cli
from postern.core.db import write_transaction
from postern.core.mail import deletion, retention
from postern.core.mail.ingest import ingest
from postern.core.models import Attachment, AuditEvent, Inbox, Message, RetentionPolicy, Thread, utcnow
from postern.core.principal import CLI, RequestInfo

INFO = RequestInfo()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def deliver(postern, inbox, subject: str, age_days: float = 0) -> Message:
    raw = f"From: b@example.org\r\nTo: {inbox.address}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    [message] = ingest(postern, raw, "b@example.org", [inbox.address])
    if age_days:
        at = utcnow() - dt.timedelta(days=age_days)
        Message.update(received_at=at).where(Message.id == message.id).execute()
    return message


def ids_in(inbox) -> list[str]:
    return [m.id for m in Message.select(Message.id).where(Message.inbox == inbox.id).order_by(Message.seq)]


def purges() -> list[AuditEvent]:
    return list(AuditEvent.select().where(AuditEvent.action == "message.purge").order_by(AuditEvent.id))


@pytest.fixture
def acme(client, postern):
    """acme with two empty inboxes (their seed messages deleted: mail is then delivered
    in the order of its age, as it is in life)."""
    tenant = make_tenant("acme")
    tenant.bot = tenant.agent_key(handle="bot")
    tenant.inbox = seed_inbox(postern, tenant.bot, username="bot")
    tenant.other = seed_inbox(postern, tenant.bot, username="other")
    for inbox in (tenant.inbox, tenant.other):
        with write_transaction():
            assert deletion.remove(ids_in(inbox), inbox.id) == 1
    return tenant


def put(client, token, days, inbox_id=None, **params):
    url = f"/v1/admin/inboxes/{inbox_id}/retention" if inbox_id else "/v1/admin/retention"
    return client.simulate_put(url, json={"days": days}, params=params or None, headers=bearer(token))


# -- the sweep --------------------------------------------------------------------------


def test_mail_older_than_the_retention_is_purged_and_newer_kept(client, postern, acme):
    old = [deliver(postern, acme.inbox, f"old {i}", age_days=40) for i in range(3)]
    recent = deliver(postern, acme.inbox, "recent", age_days=20)
    assert put(client, acme.admin_token, 30).status_code == 200

    assert retention.purge_expired() == 3

    assert ids_in(acme.inbox) == [recent.id]
    assert not Thread.select().where(Thread.id.in_([m.thread_id for m in old])).exists()
    [row] = purges()
    assert (row.actor, row.token_id) == ("system", "retention")
    assert (row.target, row.customer_id) == (acme.inbox.id, acme.customer.id)
    assert row.code == "count=3 days=30"
    assert retention.purge_expired() == 0  # nothing left: no audit row either
    assert len(purges()) == 1


def test_attachments_of_purged_mail_go_too(postern, acme):
    inbox = seed_inbox(postern, acme.agent_key(handle="files"), username="files")
    seed = Message.get(Message.inbox == inbox.id)  # seed_inbox's message has an attachment
    assert Attachment.select().where(Attachment.message == seed.id).exists()
    Message.update(received_at=utcnow() - dt.timedelta(days=3)).where(Message.id == seed.id).execute()
    retention.set_retention(CLI, INFO, 2, acme.customer.id)

    assert retention.purge_expired() == 1
    assert not Attachment.select().where(Attachment.message == seed.id).exists()


def test_the_sweep_reads_oldest_first_and_purges_late_never_early(postern, acme):
    """Mail is stored in the order it is received (``received_at`` is taken with the
    sequence), so the sweep reads the oldest by sequence and stops at the first message
    still kept. A message stored out of that order waits for those before it."""
    newer = deliver(postern, acme.inbox, "newer", age_days=1)
    older = deliver(postern, acme.inbox, "older", age_days=9)  # out of order: behind a newer one
    retention.set_retention(CLI, INFO, 5, acme.customer.id)

    assert retention.purge_expired() == 0
    Message.update(received_at=utcnow() - dt.timedelta(days=6)).where(Message.id == newer.id).execute()
    assert retention.purge_expired() == 2
    assert older.id not in ids_in(acme.inbox)


def test_an_inbox_setting_wins_over_its_customers(client, postern, acme):
    in_bot = deliver(postern, acme.inbox, "bot mail", age_days=10)
    in_other = deliver(postern, acme.other, "other mail", age_days=10)
    assert put(client, acme.admin_token, 30).status_code == 200  # the customer: 30 days
    assert put(client, acme.admin_token, 5, acme.inbox.id).status_code == 200  # this inbox: 5

    assert retention.purge_expired() == 1
    assert in_bot.id not in ids_in(acme.inbox)
    assert in_other.id in ids_in(acme.other)
    assert [r.target for r in purges()] == [acme.inbox.id]


def test_null_keeps_mail_forever(client, postern, acme):
    ancient = deliver(postern, acme.inbox, "ancient", age_days=3650)
    also_ancient = deliver(postern, acme.other, "ancient too", age_days=3650)
    assert retention.purge_expired() == 0  # nothing set: forever

    assert put(client, acme.admin_token, None).status_code == 200  # the customer: forever
    assert retention.purge_expired() == 0

    assert put(client, acme.admin_token, 30).status_code == 200
    assert put(client, acme.admin_token, None, acme.inbox.id).status_code == 200  # this inbox: forever anyway
    assert retention.purge_expired() == 1
    assert ancient.id in ids_in(acme.inbox)
    assert also_ancient.id not in ids_in(acme.other)


def test_a_batch_is_bounded_and_audited_once(postern, acme):
    for i in range(7):
        deliver(postern, acme.inbox, f"old {i}", age_days=9)
    for i in range(2):
        deliver(postern, acme.other, f"old {i}", age_days=9)
    retention.set_retention(CLI, INFO, 8, acme.customer.id)

    assert retention.purge_expired(batch=3) == 3 + 2  # one batch per inbox per round
    assert retention.purge_expired(batch=3) == 3
    assert retention.purge_expired(batch=3) == 1
    assert retention.purge_expired(batch=3) == 0

    counts = [(r.target, r.code) for r in purges()]
    assert sorted(counts) == sorted(
        [
            (acme.inbox.id, "count=3 days=8"),
            (acme.other.id, "count=2 days=8"),
            (acme.inbox.id, "count=3 days=8"),
            (acme.inbox.id, "count=1 days=8"),
        ]
    )
    assert ids_in(acme.inbox) == ids_in(acme.other) == []


def test_mail_being_sent_is_left_for_a_later_sweep(postern, acme):
    queued = deliver(postern, acme.inbox, "queued", age_days=9)
    Message.update(direction="outbound", status="queued").where(Message.id == queued.id).execute()
    expired = deliver(postern, acme.inbox, "expired", age_days=9)
    retention.set_retention(CLI, INFO, 8, acme.customer.id)

    assert retention.purge_expired() == 1
    assert queued.id in ids_in(acme.inbox) and expired.id not in ids_in(acme.inbox)


def test_deleting_an_inbox_removes_its_setting(client, acme):
    assert put(client, acme.admin_token, 5, acme.inbox.id).status_code == 200
    resp = client.simulate_delete(f"/v1/admin/inboxes/{acme.inbox.id}", headers=bearer(acme.admin_token))
    assert resp.status_code == 204, resp.text
    assert not RetentionPolicy.select().where(RetentionPolicy.scope == acme.inbox.id).exists()


# -- the API ----------------------------------------------------------------------------


def test_levels_read_set_and_clear(client, acme):
    token = acme.admin_token
    resp = client.simulate_get(f"/v1/admin/inboxes/{acme.inbox.id}/retention", headers=bearer(token))
    assert resp.status_code == 200
    assert resp.json == {
        "customer_id": acme.customer.id,
        "inbox_id": acme.inbox.id,
        "set": False,
        "days": None,
        "effective_days": None,
    }
    assert put(client, token, 90).json == {
        "customer_id": acme.customer.id,
        "inbox_id": None,
        "set": True,
        "days": 90,
        "effective_days": 90,
    }
    inbox = client.simulate_get(f"/v1/admin/inboxes/{acme.inbox.id}/retention", headers=bearer(token)).json
    assert (inbox["set"], inbox["days"], inbox["effective_days"]) == (False, None, 90)
    inbox = put(client, token, None, acme.inbox.id).json
    assert (inbox["set"], inbox["days"], inbox["effective_days"]) == (True, None, None)
    cleared = client.simulate_delete(f"/v1/admin/inboxes/{acme.inbox.id}/retention", headers=bearer(token))
    assert cleared.status_code == 200 and cleared.json["effective_days"] == 90 and cleared.json["set"] is False
    customer = client.simulate_delete("/v1/admin/retention", headers=bearer(token)).json
    assert (customer["set"], customer["effective_days"]) == (False, None)

    rows = AuditEvent.select().where(AuditEvent.action.startswith("retention.")).order_by(AuditEvent.id)
    assert [(r.action, r.code) for r in rows if r.action != "retention.read"] == [
        ("retention.set", "days=90"),
        ("retention.set", "days=forever"),
        ("retention.clear", None),
        ("retention.clear", None),
    ]


def test_operators_name_the_customer_and_org_admins_stay_in_theirs(client, postern, acme):
    globex = make_tenant("globex")
    operator = operator_token()
    resp = put(client, operator, 30)
    assert resp.status_code == 422 and resp.json["error"]["field"] == "customer_id"
    assert put(client, operator, 30, customer_id=globex.label).json["customer_id"] == globex.customer.id

    # An org admin's customer_id is its own whatever it names; another's inbox is a 404.
    theirs = seed_inbox(postern, globex.agent_key(handle="victim"), username="victim")
    resp = put(client, acme.admin_token, 1, theirs.id)
    assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found"
    resp = put(client, acme.admin_token, 1, customer_id=globex.customer.id)
    assert resp.status_code == 404
    assert [(r.customer_id, r.scope, r.days) for r in RetentionPolicy.select()] == [(globex.customer.id, "", 30)]


@pytest.mark.parametrize(
    "body",
    [
        {"days": 0},
        {"days": -1},
        {"days": 36501},
        {"days": "30"},
        {"days": 1.5},
        {"days": 30.0},
        {"days": True},
        {"days": [30]},
        {},
        {"days": 30, "hours": 1},
    ],
    ids=repr,
)
def test_days_must_be_an_integer_from_1_to_36500_or_null(client, acme, body):
    for url in ("/v1/admin/retention", f"/v1/admin/inboxes/{acme.inbox.id}/retention"):
        resp = client.simulate_put(url, json=body, headers=bearer(acme.admin_token))
        assert resp.status_code == 422, resp.text
        assert resp.json["error"]["field"] == ("hours" if "hours" in body else "days")
    assert RetentionPolicy.select().count() == 0


@pytest.mark.parametrize("days", [1, 36500, None])
def test_the_bounds_and_null_are_accepted(client, acme, days):
    resp = put(client, acme.admin_token, days, acme.inbox.id)
    assert resp.status_code == 200 and resp.json["days"] == days


def test_agent_keys_cannot_touch_retention(client, acme):
    resp = put(client, acme.bot.agent_key, 1, acme.inbox.id)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "wrong_key_type"
    assert RetentionPolicy.select().count() == 0


# -- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def run(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), obj={})

    return invoke


def test_the_cli_sets_shows_clears_and_purges(run, postern, acme):
    result = run("admin", "retention", "set", "30", "--customer", "acme")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{acme.customer.id}\nretention: 30 days (set here)\n"

    result = run("admin", "retention", "show", "--inbox", acme.inbox.id)
    assert result.stdout == f"{acme.inbox.id}\nretention: 30 days (from its customer)\n"
    result = run("admin", "retention", "set", "forever", "--inbox", acme.inbox.id, "--json")
    assert json.loads(result.stdout)["set"] is True and json.loads(result.stdout)["effective_days"] is None
    assert run("admin", "retention", "show", "--inbox", acme.inbox.id).stdout.endswith("forever (set here)\n")
    result = run("admin", "retention", "clear", "--inbox", acme.inbox.id)
    assert result.stdout.endswith("30 days (from its customer)\n")

    deliver(postern, acme.other, "old", age_days=31)
    result = run("admin", "retention", "purge")
    assert result.exit_code == 0 and result.stdout == "purged 1 message(s)\n"
    assert Inbox.get_by_id(acme.other.id)  # the inbox stays, only mail goes


@pytest.mark.parametrize(
    "args, message",
    [
        (("set", "0", "--customer", "acme"), "days must be an integer from 1 to 36500"),
        (("set", "soon", "--customer", "acme"), "not a number of days"),
        (("set", "30"), "name one --customer or one --inbox"),
        (("show", "--customer", "acme", "--inbox", "inb_x"), "name one --customer or one --inbox"),
        (("show", "--customer", "initech"), "no customer 'initech'"),
    ],
)
def test_the_cli_refuses_bad_input(run, acme, args, message):
    result = run("admin", "retention", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert RetentionPolicy.select().count() == 0


# -- the audit log's own period ------------------------------------------------------------


def test_audit_rows_have_their_own_period(postern, acme):
    old = utcnow() - dt.timedelta(days=400)
    AuditEvent.update(at=old).where(AuditEvent.action == "customer.create").execute()
    kept = AuditEvent.select().where(AuditEvent.action != "customer.create").count()
    assert AuditEvent.select().where(AuditEvent.at == old).count() == 1

    postern.config.audit.keep_days = 0  # the default: forever
    assert retention.purge_expired(postern) == 0
    assert AuditEvent.select().where(AuditEvent.at == old).count() == 1

    postern.config.audit.keep_days = 365
    assert retention.purge_expired(postern) == 1
    assert AuditEvent.select().where(AuditEvent.at == old).count() == 0
    purge = AuditEvent.get(AuditEvent.action == "audit.purge")
    assert purge.code == "count=1 days=365" and purge.actor == "system"
    assert AuditEvent.select().where(AuditEvent.action != "audit.purge").count() == kept
    assert retention.purge_expired(postern) == 0  # nothing older left; no second purge row
    assert AuditEvent.select().where(AuditEvent.action == "audit.purge").count() == 1


def test_audit_purges_are_batched(postern, acme):
    rows = [
        {"at": utcnow() - dt.timedelta(days=40), "actor": "cli", "action": "old.thing", "outcome": "ok"}
        for _ in range(7)
    ]
    with write_transaction():
        AuditEvent.insert_many(rows).execute()
    assert retention.purge_audit(30, batch=5) == 5
    assert retention.purge_audit(30, batch=5) == 2
    assert AuditEvent.select().where(AuditEvent.action == "old.thing").count() == 0
    assert AuditEvent.select().where(AuditEvent.action == "audit.purge").count() == 2


def test_the_audit_period_is_validated(env):
    from postern.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="audit.keep_days"):
        load_config(environ={**env, "POSTERN_AUDIT_KEEP_DAYS": "-1"})
    assert load_config(environ={**env, "POSTERN_AUDIT_KEEP_DAYS": "90"}).audit.keep_days == 90
