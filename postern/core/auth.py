"""Authentication: a presented key becomes a ``Principal``, or a typed, audited refusal.

Every request reads the key's row, so a revocation takes effect on the very next
request in every worker and host: there is no per-process cache to outlive it.
"""

from __future__ import annotations

import functools

from postern.core import audit, fastsql, keys
from postern.core.db import write_transaction
from postern.core.errors import AuthenticationFailed, PermissionDenied
from postern.core.models import AdminToken, AgentKey, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import is_suspended

REALM_KIND = {"agent": "agent", "admin": "admin"}
WRONG_REALM = {
    "agent": "this API takes agent keys (pk_agent_…); admin and enrollment keys are refused here",
    "admin": "the admin API takes admin tokens (pk_admin_…) only",
}


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(token: str | None, realm: str, info: RequestInfo, on_failure=None) -> Principal:
    """Resolve ``token`` for ``realm`` (``agent`` or ``admin``); refusals are audited.

    ``on_failure(info)``, when given, is called before a failed attempt (no key, a
    malformed, unknown, revoked or expired one) is audited, and may refuse it instead
    (the rate limiter's failed-authentication throttle: postern/core/ratelimits)."""
    try:
        return _authenticate(token, realm, info)
    except PendingDenial as failed:
        if on_failure is not None:
            on_failure(info)
        failed.deny()
        raise AssertionError("deny raises") from None


def _authenticate(token, realm, info) -> Principal:
    if token is None:
        _fail(info, "missing_key", AuthenticationFailed, "send Authorization: Bearer <key>")
    try:
        kind = keys.parse_kind(token)
    except keys.MalformedKey as exc:
        _fail(info, "invalid_key", AuthenticationFailed, f"invalid key: {exc}")
    if kind != REALM_KIND[realm]:
        _fail(info, "wrong_key_type", PermissionDenied, WRONG_REALM[realm], key_prefix=keys.display_prefix(token))
    if realm == "agent":
        return _agent(token, info)
    return _admin(token, info)


class PendingDenial(Exception):
    """A failed authentication not yet audited, so a throttle can decide first:
    ``deny()`` audits it (through ``denier``) and raises the refusal."""

    def __init__(self, denier, *args, **kwargs):
        self.denier, self.args_, self.kwargs = denier, args, kwargs

    def deny(self):
        self.denier(*self.args_, **self.kwargs)


def _fail(*args, **kwargs):
    raise PendingDenial(_deny, *args, **kwargs)


_AGENT_KEY_FIELDS = fastsql.all_fields(AgentKey)


# A suspended customer's keys are found by the same one statement every request runs:
# the suspension is a condition on it, and only a key it does not find costs a second look.
_ACTIVE_AGENT_KEY = (
    "WHERE key_hash = ? AND NOT EXISTS "
    "(SELECT 1 FROM customer WHERE customer.id = agent_key.customer_id AND customer.suspended_at IS NOT NULL)"
)


@functools.lru_cache(maxsize=64)
def _scope_set(scopes: str) -> frozenset[str]:
    """One shared set per stored scopes string (a handful exist: subsets of three
    scopes): a parked wait keeps its principal for minutes, thousands at once, and
    each request's own set and split strings were ~400 B of it."""
    return frozenset(scopes.split())


def _agent(token: str, info: RequestInfo) -> Principal:
    row = fastsql.select_one(AgentKey, _AGENT_KEY_FIELDS, _ACTIVE_AGENT_KEY, (keys.hash_key(token),))
    if row is None:
        row = fastsql.select_one(AgentKey, _AGENT_KEY_FIELDS, "WHERE key_hash = ?", (keys.hash_key(token),))
        if row is not None and keys.matches(token, row.key_hash):
            _deny_suspended(info, row.customer_id, row.key_prefix)
    if row is None or not keys.matches(token, row.key_hash):
        _fail(info, "invalid_key", AuthenticationFailed, "unknown key", key_prefix=keys.display_prefix(token))
    principal = Principal(
        kind="agent",
        customer_id=row.customer_id,
        token_id=row.id,
        key_prefix=row.key_prefix,
        agent_id=row.agent_id,
        enrollment_id=row.enrollment_id,
        scopes=_scope_set(row.scopes),
        expires_at=row.expires_at,
    )
    if row.revoked_at is not None:
        _fail(info, "key_revoked", AuthenticationFailed, "this key was revoked", principal=principal)
    if row.expires_at <= utcnow():
        _fail(info, "key_expired", AuthenticationFailed, "this key expired; enroll again", principal=principal)
    return principal


def _admin(token: str, info: RequestInfo) -> Principal:
    row = AdminToken.get_or_none(AdminToken.key_hash == keys.hash_key(token))
    if row is None or not keys.matches(token, row.key_hash):
        _fail(info, "invalid_key", AuthenticationFailed, "unknown key", key_prefix=keys.display_prefix(token))
    principal = Principal(kind="admin", customer_id=row.customer_id, token_id=row.id, key_prefix=row.key_prefix)
    if row.revoked_at is not None:
        _fail(info, "key_revoked", AuthenticationFailed, "this token was revoked", principal=principal)
    if is_suspended(row.customer_id):
        _deny_suspended(info, row.customer_id, row.key_prefix)
    return principal


def _deny_suspended(info: RequestInfo, customer_id: str, key_prefix: str) -> None:
    with write_transaction():
        audit.record(
            "auth", principal=None, info=info, outcome="denied", code="customer_suspended",
            customer_id=customer_id, key_prefix=key_prefix,
        )  # fmt: skip
    exc = PermissionDenied("this customer is suspended; ask the operator", code="customer_suspended")
    exc.audited = True
    raise exc


def require_scope(principal: Principal, scope: str, info: RequestInfo, action: str, target: str | None = None) -> None:
    """Refuse (403 ``insufficient_scope``, audited) a key that lacks ``scope``."""
    if principal.kind == "agent" and scope not in principal.scopes:
        _deny(
            info,
            "insufficient_scope",
            PermissionDenied,
            f"this key lacks the scope '{scope}'",
            principal=principal,
            action=action,
            target=target,
        )


def _deny(info, code, error, message, *, principal=None, key_prefix=None, action="auth", target=None):
    with write_transaction():
        audit.record(
            action, principal=principal, info=info, outcome="denied", code=code, target=target, key_prefix=key_prefix
        )
    exc = error(message, code=code)
    exc.audited = True
    raise exc
