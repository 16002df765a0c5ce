"""The audit log: every action and every denied attempt, with who, what and where."""

from __future__ import annotations

import contextlib
import logging
import threading

import peewee

from postern.core import fastsql
from postern.core.db import database, write_transaction
from postern.core.logs import redact
from postern.core.models import AuditEvent, utcnow
from postern.core.principal import Principal, RequestInfo

log = logging.getLogger("postern.audit")


def record(
    action: str,
    *,
    principal: Principal | None,
    info: RequestInfo,
    outcome: str = "ok",
    target: str | None = None,
    code: str | None = None,
    customer_id: str | None = None,
    enrollment_id: str | None = None,
    agent_id: str | None = None,
    token_id: str | None = None,
    key_prefix: str | None = None,
) -> None:
    """Write one audit row; call inside the action's transaction so both commit together.

    Explicit keyword ids fill in what an unauthenticated attempt knows (e.g. the
    enrollment key a redemption named) and override nothing the principal carries.
    """
    row = _row(
        action,
        principal,
        info,
        outcome=outcome,
        target=target,
        code=code,
        customer_id=customer_id,
        enrollment_id=enrollment_id,
        agent_id=agent_id,
        token_id=token_id,
        key_prefix=key_prefix,
    )
    fastsql.insert(AuditEvent, row)
    if outcome != "ok":
        log.info("denied %s on %r: %s (request %s)", action, row["target"], code, info.request_id)


def _row(action, p: Principal | None, info: RequestInfo, *, outcome="ok", target=None, code=None, **ids) -> dict:
    if target is not None:
        # Targets come from URLs: never keep a key pasted into one, nor control characters.
        target = redact(target).encode("unicode_escape").decode("ascii")[:100]
    return dict(
        at=utcnow(),
        customer_id=(p.customer_id if p else None) or ids.get("customer_id"),
        enrollment_id=(p.enrollment_id if p else None) or ids.get("enrollment_id"),
        agent_id=(p.agent_id if p else None) or ids.get("agent_id"),
        token_id=(p.token_id if p else None) or ids.get("token_id"),
        key_prefix=(p.key_prefix if p else None) or ids.get("key_prefix"),
        actor=p.kind if p else "anonymous",
        action=action,
        target=target,
        outcome=outcome,
        code=code,
        request_id=info.request_id,
        client_addr=info.client_addr,
    )


def record_read(action: str, *, principal: Principal, info: RequestInfo, target: str | None = None) -> None:
    """Audit a read in a transaction of its own that skips the fsync on SQLite.

    A read changes nothing, so its audit row need not survive power loss the way an
    acknowledged message must: committed with ``synchronous=NORMAL`` it survives any
    crash of Postern, and reads stop queueing behind a disk flush each. Actions and
    refusals keep the configured durability.

    Under ``deferring_reads`` (the API) the row is handed back instead, for the caller
    to commit before it answers.
    """
    row = _row(action, principal, info, target=target)
    deferred = getattr(_deferred, "rows", None)
    if deferred is not None:
        deferred.append(row)
        return
    with read_audit_transaction():
        fastsql.insert(AuditEvent, row)


_deferred = threading.local()


@contextlib.contextmanager
def deferring_reads():
    """Collect this thread's read audit rows instead of writing them. The API commits
    them after the read, in a transaction shared with concurrent requests of the same
    worker (``GroupCommitter``), and answers only once they are committed: reads then
    take the database's write lock once per batch instead of once each."""
    _deferred.rows = rows = []
    try:
        yield rows
    finally:
        _deferred.rows = None


def write_rows(rows: list[dict]) -> None:
    for row in rows:
        fastsql.insert(AuditEvent, row)


@contextlib.contextmanager
def read_audit_transaction():
    with relaxed_durability(), write_transaction():
        yield


@contextlib.contextmanager
def relaxed_durability():
    db = database.obj
    if not isinstance(db, peewee.SqliteDatabase) or db.in_transaction():
        yield
        return
    previous = db.execute_sql("PRAGMA synchronous").fetchone()[0]
    db.execute_sql("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        db.execute_sql(f"PRAGMA synchronous = {int(previous)}")
