"""Enrollment keys, redemption into agent keys, and revocation."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import peewee

from postern.core import audit, keys, tenancy, zonebell
from postern.core.auth import PendingDenial
from postern.core.db import write_transaction
from postern.core.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from postern.core.models import Agent, AgentKey, Customer, EnrollmentKey, utcnow
from postern.core.names import InvalidName, is_within, normalise_domain, normalise_handle
from postern.core.principal import SCOPES, Principal, RequestInfo
from postern.core.tenancy import tenant_domain
from postern.core.visibility import get_visible, visible

MAX_ENROLLMENT_LIFETIME = dt.timedelta(days=366)


@dataclass(frozen=True)
class Enrollment:
    """What a redemption returns; ``agent_key`` is shown this once."""

    agent: Agent
    agent_key: str
    key: AgentKey
    enrollment: EnrollmentKey
    #: The handle was already an agent of this enrollment key: a renewal, not counted
    #: against ``max_redemptions``.
    renewed: bool = False


def parse_scopes(value) -> list[str]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise InvalidInput(f"scopes must be a non-empty list drawn from {', '.join(SCOPES)}", field="scopes")
    unknown = sorted(set(value) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}", field="scopes")
    return [s for s in SCOPES if s in value]


def allowed_domains(key: EnrollmentKey) -> list[str]:
    return json.loads(key.allowed_domains)


def create_enrollment_key(
    principal: Principal,
    info: RequestInfo,
    customer: Customer,
    *,
    base_domain: str,
    scopes,
    max_mailboxes: int,
    expires_in: dt.timedelta,
    domains: list[str] | None = None,
    max_redemptions: int | None = None,
    description: str = "",
    require_approval: bool = False,
) -> tuple[EnrollmentKey, str]:
    """Mint an enrollment key for ``customer``; the plaintext is returned once. With
    ``require_approval``, its inboxes' outbound mail waits for a human (postern.core.approval)."""
    if not isinstance(require_approval, bool):
        raise InvalidInput("require_approval must be true or false", field="require_approval")
    scopes = parse_scopes(scopes)
    if not isinstance(max_mailboxes, int) or isinstance(max_mailboxes, bool) or not 0 <= max_mailboxes <= 100_000:
        raise InvalidInput("max_mailboxes must be an integer from 0 to 100000", field="max_mailboxes")
    if max_redemptions is not None and (
        not isinstance(max_redemptions, int) or isinstance(max_redemptions, bool) or not 1 <= max_redemptions <= 10**6
    ):
        raise InvalidInput("max_redemptions must be an integer from 1 to 1000000, or null", field="max_redemptions")
    if not dt.timedelta(minutes=1) <= expires_in <= MAX_ENROLLMENT_LIFETIME:
        raise InvalidInput("expiry must be between 1 minute and 366 days away", field="expires_in")
    home = tenant_domain(base_domain, customer)
    checked = []
    for domain in domains or [home]:
        try:
            domain = normalise_domain(domain) if isinstance(domain, str) else None
        except InvalidName as exc:
            raise InvalidInput(str(exc), field="allowed_domains") from None
        if domain is None or not is_within(domain, home):
            raise InvalidInput(f"allowed domains must be {home} or below it", field="allowed_domains")
        if domain not in checked:
            checked.append(domain)
    if len(description) > 200:
        raise InvalidInput("description is longer than 200 characters", field="description")
    minted = keys.mint("enroll")
    with write_transaction():
        key = EnrollmentKey.create(
            customer=customer,
            key_hash=minted.hash,
            key_prefix=minted.prefix,
            scopes=" ".join(scopes),
            allowed_domains=json.dumps(checked),
            max_mailboxes=max_mailboxes,
            max_redemptions=max_redemptions,
            description=description,
            require_approval=require_approval,
            created_by=principal.token_id or principal.kind,
            expires_at=utcnow() + expires_in,
        )
        audit.record("enrollment_key.create", principal=principal, info=info, target=key.id, customer_id=customer.id)
    zonebell.ring(checked)  # its allowed domains get their MX, SPF and DMARC at once
    return key, minted.plaintext


def redeem(
    info: RequestInfo, token, handle, *, agent_key_ttl: dt.timedelta, on_failure=None, before_mint=None
) -> Enrollment:
    """``POST /v1/enroll``: the same handle under one enrollment is always the same agent;
    every redemption mints a fresh agent key, never outliving the enrollment key.

    Redeeming again with a handle that is already an agent of this key is a *renewal*
    (audited ``enroll.renew``): agent keys are short-lived, and an SDK or MCP server
    holding the enrollment key renews before its agent key expires. It is not counted
    against ``max_redemptions``, which limits how many agents a key makes; the
    enrollment key's own expiry and revocation still end it.

    ``on_failure(info)`` is told of a token that fails (as ``authenticate``'s is) and may
    refuse it instead; ``before_mint(key)`` runs once the key is known good, before
    anything is written, and may refuse the redemption (the rate limiter's hooks)."""
    if not isinstance(token, str) or not token:
        raise InvalidInput("enrollment_token is required", field="enrollment_token")
    if not isinstance(handle, str) or not handle:
        raise InvalidInput("agent_handle is required", field="agent_handle")
    try:
        handle = normalise_handle(handle)
    except InvalidName as exc:
        raise InvalidInput(str(exc), field="agent_handle") from None
    try:
        key, ids = _valid_key(info, token)
    except PendingDenial as failed:
        if on_failure is not None:
            on_failure(info)
        failed.deny()
    if tenancy.is_suspended(key.customer_id):
        _deny(info, "customer_suspended", PermissionDenied, "this customer is suspended; ask the operator", **ids)
    if before_mint is not None:
        before_mint(key)
    now = utcnow()
    with write_transaction():
        agent = Agent.get_or_none((Agent.enrollment == key.id) & (Agent.handle == handle))
        renewed = agent is not None
        if renewed:
            # Not counted, but still only while the key stands: a revocation committed
            # since the read above stops it here.
            allowed = bool(
                EnrollmentKey.select(EnrollmentKey.id)
                .where((EnrollmentKey.id == key.id) & EnrollmentKey.revoked_at.is_null())
                .count()
            )
        else:
            # Count the redemption atomically: concurrent redemptions cannot overshoot the limit.
            allowed = bool(
                EnrollmentKey.update(redemptions=EnrollmentKey.redemptions + 1)
                .where(
                    (EnrollmentKey.id == key.id)
                    & EnrollmentKey.revoked_at.is_null()
                    & (
                        EnrollmentKey.max_redemptions.is_null()
                        | (EnrollmentKey.redemptions < EnrollmentKey.max_redemptions)
                    )
                )
                .execute()
            )
        if allowed:
            agent = agent or _agent_for(key, handle)
            minted = keys.mint("agent")
            agent_key = AgentKey.create(
                customer=key.customer_id,
                enrollment=key.id,
                agent=agent,
                key_hash=minted.hash,
                key_prefix=minted.prefix,
                scopes=key.scopes,
                expires_at=min(now + agent_key_ttl, key.expires_at),
            )
            audit.record(
                "enroll.renew" if renewed else "enroll",
                principal=None,
                info=info,
                target=agent.id,
                agent_id=agent.id,
                token_id=agent_key.id,
                **ids,
            )
    if not allowed and renewed:
        _deny(info, "key_revoked", AuthenticationFailed, "this enrollment key was revoked", **ids)
    if not allowed:
        _deny(
            info,
            "redemption_limit_reached",
            PermissionDenied,
            "this enrollment key was redeemed as often as allowed",
            **ids,
        )
    key = EnrollmentKey.get_by_id(key.id)
    return Enrollment(agent=agent, agent_key=minted.plaintext, key=agent_key, enrollment=key, renewed=renewed)


def _fail(*args, **kwargs):
    raise PendingDenial(_deny, *args, **kwargs)


def _valid_key(info: RequestInfo, token: str) -> tuple[EnrollmentKey, dict]:
    """The enrollment key ``token`` names, if it is one and still stands."""
    try:
        kind = keys.parse_kind(token)
    except keys.MalformedKey as exc:
        _fail(info, "invalid_key", AuthenticationFailed, f"invalid enrollment token: {exc}")
    if kind != "enroll":
        _fail(
            info,
            "wrong_key_type",
            PermissionDenied,
            "enrollment_token must be a pk_enroll_… key",
            key_prefix=keys.display_prefix(token),
        )
    prefix = keys.display_prefix(token)
    key = EnrollmentKey.get_or_none(EnrollmentKey.key_hash == keys.hash_key(token))
    if key is None or not keys.matches(token, key.key_hash):
        _fail(info, "invalid_key", AuthenticationFailed, "unknown enrollment token", key_prefix=prefix)
    ids = {"customer_id": key.customer_id, "enrollment_id": key.id, "key_prefix": key.key_prefix}
    if key.revoked_at is not None:
        _fail(info, "key_revoked", AuthenticationFailed, "this enrollment key was revoked", **ids)
    if key.expires_at <= utcnow():
        _fail(info, "key_expired", AuthenticationFailed, "this enrollment key expired", **ids)
    return key, ids


def _agent_for(key: EnrollmentKey, handle: str) -> Agent:
    agent = Agent.get_or_none((Agent.enrollment == key.id) & (Agent.handle == handle))
    if agent is not None:
        return agent
    try:
        with key._meta.database.atomic():  # a savepoint: a lost race leaves the outer transaction usable
            return Agent.create(customer=key.customer_id, enrollment=key.id, handle=handle)
    except peewee.IntegrityError:
        return Agent.get((Agent.enrollment == key.id) & (Agent.handle == handle))


def _deny(info, code, error, message, **ids):
    with write_transaction():
        audit.record("enroll", principal=None, info=info, outcome="denied", code=code, **ids)
    exc = error(message, code=code)
    exc.audited = True
    raise exc


@dataclass(frozen=True)
class KeyDescription:
    """What ``GET /v1/me`` tells an agent key about itself."""

    principal: Principal
    agent: Agent
    enrollment: EnrollmentKey


def describe_key(principal: Principal, info: RequestInfo) -> KeyDescription:
    description = KeyDescription(
        principal, Agent.get_by_id(principal.agent_id), EnrollmentKey.get_by_id(principal.enrollment_id)
    )
    audit.record_read("me.read", principal=principal, info=info, target=principal.agent_id)
    return description


def visible_enrollment_keys(principal: Principal):
    return visible(EnrollmentKey, principal)


def get_enrollment_key(principal: Principal, key_id: str) -> EnrollmentKey:
    return get_visible(EnrollmentKey, principal, key_id, "enrollment key")


def revoke_enrollment_key(principal: Principal, info: RequestInfo, key_id: str, *, revoke_agent_keys: bool) -> int:
    """Stop further redemptions; with ``revoke_agent_keys``, also every key it minted.
    Returns how many agent keys were revoked now."""
    key = get_enrollment_key(principal, key_id)
    now = utcnow()
    with write_transaction():
        EnrollmentKey.update(revoked_at=now).where(
            (EnrollmentKey.id == key.id) & EnrollmentKey.revoked_at.is_null()
        ).execute()
        revoked = 0
        if revoke_agent_keys:
            revoked = (
                AgentKey.update(revoked_at=now)
                .where((AgentKey.enrollment == key.id) & AgentKey.revoked_at.is_null())
                .execute()
            )
        audit.record(
            "enrollment_key.revoke",
            principal=principal,
            info=info,
            target=key.id,
            customer_id=key.customer_id,
            code=f"agent_keys_revoked={revoked}",
        )
    return revoked


def get_agent_key(principal: Principal, key_id: str) -> AgentKey:
    return get_visible(AgentKey, principal, key_id, "agent key")


def revoke_agent_key(principal: Principal, info: RequestInfo, key_id: str) -> AgentKey:
    """Revoke one agent key; no other key, of this agent or another, is touched."""
    row = get_agent_key(principal, key_id)
    with write_transaction():
        AgentKey.update(revoked_at=utcnow()).where((AgentKey.id == row.id) & AgentKey.revoked_at.is_null()).execute()
        audit.record("agent_key.revoke", principal=principal, info=info, target=row.id, customer_id=row.customer_id)
    return AgentKey.get_by_id(row.id)


def visible_agents(principal: Principal):
    return visible(Agent, principal)


def get_agent(principal: Principal, agent_id: str) -> Agent:
    return get_visible(Agent, principal, agent_id, "agent")
