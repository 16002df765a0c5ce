"""Console sign-in: sessions, one-time login links and the throttle on failed sign-ins.

A session acts as one admin token: every console page calls the core as that token's
principal, so tenancy, scopes and the audit log apply as on the API. The token is read
again on every request, so revoking it ends its sessions at once. Only hashes of the
cookie secret and of link codes are stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from postern.core import audit, tenancy
from postern.core.auth import authenticate
from postern.core.db import write_transaction
from postern.core.errors import AuthenticationFailed, RateLimited
from postern.core.models import AdminToken, ConsoleLink, ConsoleLoginFailure, ConsoleSession, Customer, utcnow
from postern.core.principal import CLI, Principal, RequestInfo

#: The throttle's window: at most ``max_failed_logins`` failures per client in it.
THROTTLE_WINDOW = dt.timedelta(minutes=15)
#: ``last_seen_at`` is written at most this often, not on every page.
TOUCH_EVERY = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Lifetimes:
    idle: dt.timedelta
    absolute: dt.timedelta
    link: dt.timedelta
    max_failed_logins: int

    @classmethod
    def from_config(cls, console) -> Lifetimes:
        return cls(
            idle=dt.timedelta(minutes=console.idle_minutes),
            absolute=dt.timedelta(hours=console.absolute_hours),
            link=dt.timedelta(minutes=console.link_minutes),
            max_failed_logins=console.max_failed_logins,
        )


@dataclass(frozen=True)
class SignedIn:
    session: ConsoleSession
    secret: str
    principal: Principal


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(token: AdminToken) -> Principal:
    return Principal(kind="admin", customer_id=token.customer_id, token_id=token.id, key_prefix=token.key_prefix)


def _client(info: RequestInfo) -> str:
    return (info.client_addr or "unknown")[:64]


def _window(now: dt.datetime) -> dt.datetime:
    """The start of the fixed window ``now`` falls in (quarter hours)."""
    minutes = int(THROTTLE_WINDOW.total_seconds()) // 60
    return now.replace(minute=now.minute // minutes * minutes, second=0, microsecond=0)


def check_throttle(info: RequestInfo, lifetimes: Lifetimes) -> None:
    """Refuse (429) a client over its failed sign-ins in this window, before any key is read."""
    now = utcnow()
    row = ConsoleLoginFailure.get_or_none(
        (ConsoleLoginFailure.client == _client(info)) & (ConsoleLoginFailure.window_start == _window(now))
    )
    if row is not None and row.failures >= lifetimes.max_failed_logins:
        retry = (_window(now) + THROTTLE_WINDOW - now).total_seconds()
        raise RateLimited("too many failed sign-ins from this address; try again later", retry_after=retry)


def _note_failure(info: RequestInfo) -> int:
    """Count one failure; the first of a window is audited, the rest only counted, so a
    flood of wrong tokens cannot fill the audit log."""
    window = _window(utcnow())
    with write_transaction():
        updated = (
            ConsoleLoginFailure.update(failures=ConsoleLoginFailure.failures + 1)
            .where((ConsoleLoginFailure.client == _client(info)) & (ConsoleLoginFailure.window_start == window))
            .execute()
        )
        if not updated:
            ConsoleLoginFailure.insert(client=_client(info), window_start=window, failures=1).on_conflict(
                conflict_target=[ConsoleLoginFailure.client, ConsoleLoginFailure.window_start],
                update={ConsoleLoginFailure.failures: ConsoleLoginFailure.failures + 1},
            ).execute()
    return updated


def _start(token: AdminToken, info: RequestInfo, lifetimes: Lifetimes, how: str) -> SignedIn:
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    principal = _principal(token)
    with write_transaction():
        session = ConsoleSession.create(
            secret_hash=_hash(secret),
            admin_token=token.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetimes.absolute,
            client_addr=info.client_addr,
        )
        audit.record("console.login", principal=principal, info=info, target=session.id, code=how)
    return SignedIn(session, secret, principal)


def sign_in_with_token(token: str, info: RequestInfo, lifetimes: Lifetimes) -> SignedIn:
    """A session for a ``pk_admin_…`` token pasted into the sign-in form."""
    check_throttle(info, lifetimes)
    try:
        principal = authenticate(token, "admin", info)
    except AuthenticationFailed:
        _note_failure(info)
        raise
    except Exception:
        _note_failure(info)  # a key of the wrong kind counts as a failure too
        raise
    return _start(AdminToken.get_by_id(principal.token_id), info, lifetimes, "token")


def create_login_link(info: RequestInfo, customer: Customer | None, lifetimes: Lifetimes) -> tuple[ConsoleLink, str]:
    """A one-time sign-in code for the CLI to print. It acts as an admin token minted
    for it (operator-wide, or ``customer``'s) whose secret nobody ever sees."""
    token, _plaintext = tenancy.create_admin_token(CLI, info, customer, "console link")
    code = secrets.token_urlsafe(32)
    with write_transaction():
        link = ConsoleLink.create(code_hash=_hash(code), admin_token=token.id, expires_at=utcnow() + lifetimes.link)
        audit.record("console.link", principal=CLI, info=info, target=link.id, token_id=token.id)
    return link, code


def sign_in_with_link(code: str, info: RequestInfo, lifetimes: Lifetimes) -> SignedIn:
    """Spend a login link: the first use wins, a second or late one is refused."""
    check_throttle(info, lifetimes)
    now = utcnow()
    link = ConsoleLink.get_or_none(ConsoleLink.code_hash == _hash(code)) if code else None
    usable = link is not None and link.used_at is None and link.expires_at > now
    if usable:
        with write_transaction():
            usable = bool(
                ConsoleLink.update(used_at=now)
                .where((ConsoleLink.id == link.id) & ConsoleLink.used_at.is_null())
                .execute()
            )
    token = AdminToken.get_or_none(AdminToken.id == link.admin_token_id) if usable else None
    if token is None or token.revoked_at is not None:
        if _note_failure(info) == 0:
            with write_transaction():
                audit.record("console.login", principal=None, info=info, outcome="denied", code="invalid_link")
        raise AuthenticationFailed("this sign-in link is unknown, used or expired", code="invalid_link")
    return _start(token, info, lifetimes, "link")


def resume(secret: str | None, info: RequestInfo, lifetimes: Lifetimes) -> tuple[ConsoleSession, Principal] | None:
    """The live session of a cookie and the principal it acts as, or None (signed out,
    expired by either clock, or its admin token revoked)."""
    if not secret:
        return None
    session = ConsoleSession.get_or_none(ConsoleSession.secret_hash == _hash(secret))
    now = utcnow()
    if session is None or not hmac.compare_digest(session.secret_hash, _hash(secret)):
        return None
    if session.ended_at is not None or session.expires_at <= now or session.last_seen_at + lifetimes.idle <= now:
        return None
    token = AdminToken.get_or_none(AdminToken.id == session.admin_token_id)
    if token is None or token.revoked_at is not None or tenancy.is_suspended(token.customer_id):
        return None
    if now - session.last_seen_at >= TOUCH_EVERY:
        with write_transaction():
            ConsoleSession.update(last_seen_at=now).where(ConsoleSession.id == session.id).execute()
    return session, _principal(token)


def end(session: ConsoleSession, principal: Principal, info: RequestInfo) -> None:
    with write_transaction():
        ConsoleSession.update(ended_at=utcnow()).where(ConsoleSession.id == session.id).execute()
        audit.record("console.logout", principal=principal, info=info, target=session.id)


def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf_token.encode(), presented.encode())
