"""Inboxes: one call creates an address on the tenant's domain, within the key's quota."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import peewee
from email_validator import EmailNotValidError, validate_email

from postern.core import audit, fastsql, usage
from postern.core.backends import InboxRef, PermanentFailure, TemporaryFailure
from postern.core.db import write_transaction
from postern.core.enrollment import allowed_domains, get_agent
from postern.core.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
)
from postern.core.ids import well_formed
from postern.core.mail import headers
from postern.core.models import Agent, EnrollmentKey, InboundPolicy, Inbox, RetentionPolicy
from postern.core.names import InvalidName, normalise_domain, normalise_local_part
from postern.core.pagination import Page, paginate, parse_limit
from postern.core.principal import Principal, RequestInfo
from postern.core.quota import check_quota, payment_refusal
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.inboxes")

MAX_CLIENT_ID = 200
MAX_DISPLAY_NAME = 200


def _optional_str(body: dict, name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters", field=name)
    if any(c in value for c in "\r\n\0"):
        raise InvalidInput(f"{name} must not contain line breaks or NUL", field=name)
    return value


@dataclass(frozen=True)
class Owner:
    """Whose inbox it is: the tenant, the enrollment whose quota and domains it uses, and
    the agent that reads it."""

    customer_id: str
    enrollment_id: str
    agent_id: str


def create_inbox(postern, principal: Principal, info: RequestInfo, body: dict) -> tuple[Inbox, bool]:
    """An agent creates (or, for a repeated ``client_id``, gets back) an inbox of its own.
    Returns (inbox, created). Reserved local parts are refused (403 ``reserved_local_part``)."""
    owner = Owner(principal.customer_id, principal.enrollment_id, principal.agent_id)
    return _create(postern, principal, info, body, owner)


def create_inbox_for_agent(postern, principal: Principal, info: RequestInfo, agent_id: str, body: dict):
    """An operator or org admin creates an inbox for one of its tenants' agents, under that
    agent's enrollment (its quota and allowed domains), as the agent would; the one way
    to a reserved local part such as ``postmaster``. Returns (inbox, created)."""
    if principal.kind not in ("admin", "cli"):
        raise PermissionDenied("only an operator or org admin may create inboxes for an agent", code="wrong_key_type")
    agent = get_agent(principal, agent_id)  # another tenant's agent: 404
    if agent.enrollment.revoked_at is not None:
        raise Conflict("this agent's enrollment key is revoked: it gets no new inboxes", code="enrollment_revoked")
    return _create(postern, principal, info, body, Owner(agent.customer_id, agent.enrollment_id, agent.id))


def reserved_refusal(postern, principal: Principal, username: str) -> PermissionDenied | None:
    """Why ``principal`` may not take ``username`` (already normalised), or None."""
    if principal.kind == "agent" and username in postern.config.mail.reserved_local_parts:
        return PermissionDenied(
            f"'{username}' is a reserved role address (RFC 2142 and certificate authorities' domain checks "
            "use it); only an operator or org admin can create it (postern admin inbox create)",
            code="reserved_local_part",
            field="username",
        )
    return None


def _create(postern, principal: Principal, info: RequestInfo, body: dict, owner: Owner) -> tuple[Inbox, bool]:
    unknown = sorted(set(body) - {"username", "domain", "display_name", "client_id"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    client_id = _optional_str(body, "client_id", MAX_CLIENT_ID)
    display_name = _optional_str(body, "display_name", MAX_DISPLAY_NAME) or ""
    # It becomes the From header's display name of every message the inbox sends.
    display_name = headers.display_name(headers.check_text(display_name, "display_name", "display_name"))
    username = _optional_str(body, "username", 64)
    domain = _optional_str(body, "domain", 253)

    if client_id is not None:
        existing = _by_client_id(owner, client_id)
        if existing is not None:
            return existing, False

    enrollment = EnrollmentKey.get_by_id(owner.enrollment_id)
    domains = allowed_domains(enrollment)
    if domain is None:
        domain = domains[0]
    else:
        try:
            domain = normalise_domain(domain)
        except InvalidName as exc:
            raise InvalidInput(str(exc), field="domain") from None
        if domain not in domains:
            raise InvalidInput(f"domain must be one of: {', '.join(domains)}", field="domain")
    agent = Agent.get_by_id(owner.agent_id)
    if username is None:
        username = _free_username(agent.handle, domain, postern.config.mail.reserved_local_parts)
    else:
        try:
            username = normalise_local_part(username)
        except InvalidName as exc:
            raise InvalidInput(str(exc), field="username") from None
        if refusal := reserved_refusal(postern, principal, username):
            raise refusal
    try:
        # The domain was checked against the enrollment's allowed domains (set by the
        # operator, possibly a special-use name such as *.localhost that email-validator
        # refuses), so only the local part is put to email-validator here.
        validate_email(f"{username}@example.org", check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"'{username}' is not a valid mailbox name: {exc}", field="username") from None
    address = f"{username}@{domain}"

    decision = check_quota(postern, owner.customer_id, "inbox.create", 1, info)
    if not decision.allowed:
        raise payment_refusal(decision)

    provisioned = []  # the inbox, once the receive backend has made it
    try:
        try:
            with write_transaction():
                taken = (
                    EnrollmentKey.update(mailboxes_used=EnrollmentKey.mailboxes_used + 1)
                    .where(
                        (EnrollmentKey.id == enrollment.id)
                        & (EnrollmentKey.mailboxes_used < EnrollmentKey.max_mailboxes)
                    )
                    .execute()
                )
                if not taken:
                    raise QuotaExceeded(f"this enrollment allows {enrollment.max_mailboxes} mailboxes; all are in use")
                inbox = Inbox.create(
                    customer=owner.customer_id,
                    enrollment=enrollment.id,
                    agent=owner.agent_id,
                    address=address,
                    username=username,
                    domain=domain,
                    display_name=display_name,
                    client_id=client_id,
                )
                provisioned.append(inbox)  # before the call: it may fail half-way
                _provision(postern, inbox)
                audit.record(
                    "inbox.create", principal=principal, info=info, target=inbox.id, customer_id=owner.customer_id
                )
                usage.inbox_created(inbox)
                webhook_events.inbox_event(postern, "inbox.created", inbox)
        except BaseException:
            if provisioned:  # rolled back once the backend was asked: unmake it there too
                _unprovision(postern, provisioned[0])
            raise
    except QuotaExceeded as exc:
        _denied(principal, info, "inbox.create", exc.code)
        exc.audited = True
        raise
    except peewee.IntegrityError:
        if client_id is not None and (existing := _by_client_id(owner, client_id)) is not None:
            return existing, False  # a concurrent retry with the same client_id won
        raise Conflict(f"the address {address} is taken", code="address_taken", field="username") from None
    return inbox, True


def _provision(postern, inbox: Inbox) -> None:
    """Ask the receive backend to accept mail for the inbox, inside the transaction:
    a failure rolls the inbox back, so nothing is half-made."""
    try:
        receiver = postern.backend("receive")
    except BackendUnavailable:
        log.warning("no receive backend installed: inbox %s is stored but nothing will deliver to it", inbox.id)
        return
    ref = InboxRef(inbox.id, inbox.customer_id, inbox.address)
    try:
        receiver.provision(ref)
    except TemporaryFailure as exc:
        raise Unavailable(
            f"the receive backend could not provision the inbox: {exc}",
            code="provisioning_failed",
            retry_after=exc.retry_after or 5,
        ) from exc
    except PermanentFailure as exc:
        raise Unavailable(f"the receive backend refused the inbox: {exc}", code="provisioning_refused") from exc


def _unprovision(postern, inbox: Inbox) -> None:
    """Undo ``_provision`` after the inbox's transaction rolled back. A failure here
    is logged, never raised over the error that caused the rollback."""
    try:
        receiver = postern.backend("receive")
    except BackendUnavailable:
        return
    try:
        receiver.deprovision(InboxRef(inbox.id, inbox.customer_id, inbox.address))
    except (TemporaryFailure, PermanentFailure) as exc:
        log.warning("inbox %s rolled back; the receive backend may still hold %s: %s", inbox.id, inbox.address, exc)
    except Exception:
        log.exception("inbox %s rolled back, but the receive backend still has %s", inbox.id, inbox.address)


def _free_username(handle: str, domain: str, reserved: list[str]) -> str:
    """The agent's handle, or the handle with a random suffix when that address is taken
    or reserved (an agent named ``postmaster`` gets ``postmaster-1a2b3c4d``)."""
    candidate = handle
    while candidate in reserved or Inbox.select().where(Inbox.address == f"{candidate}@{domain}").exists():
        candidate = f"{handle[:55]}-{secrets.token_hex(4)}"
    return candidate


def _by_client_id(owner: Owner, client_id: str) -> Inbox | None:
    """The owner's inbox made with ``client_id``: the same query ``visible_inboxes`` makes
    for the owner's agent key."""
    return (
        Inbox.select()
        .where(
            (Inbox.customer == owner.customer_id)
            & (Inbox.enrollment == owner.enrollment_id)
            & (Inbox.client_id == client_id)
        )
        .first()
    )


def _denied(principal, info, action, code, target=None) -> None:
    with write_transaction():
        audit.record(action, principal=principal, info=info, outcome="denied", code=code, target=target)


def visible_inboxes(principal: Principal):
    """Inboxes ``principal`` may see: an agent key sees those made under its enrollment
    key (the grant a human handed out); admins see their tenant's; operators all."""
    query = Inbox.select()
    if principal.kind == "agent":
        return query.where((Inbox.customer == principal.customer_id) & (Inbox.enrollment == principal.enrollment_id))
    if not principal.is_operator:
        return query.where(Inbox.customer == principal.customer_id)
    return query


#: The admin listing's filters (``search_inboxes``).
INBOX_FILTERS = ("customer_id", "agent_id", "enrollment_id", "q")
MAX_ADDRESS = 320


def search_inboxes(principal: Principal, filters: dict):
    """``visible_inboxes(principal)`` narrowed by ``customer_id``, ``agent_id`` and
    ``enrollment_id`` (exact: another tenant's id just finds nothing) and ``q``, part of
    the address in any case. Addresses are stored lower-case (``postern.core.names``),
    so lowering ``q`` makes the match case-insensitive whatever the database's LIKE
    does; peewee escapes ``_`` and ``%`` in it (``_`` is common in a local part)."""
    query = visible_inboxes(principal)
    for name, column in (
        ("customer_id", Inbox.customer),
        ("agent_id", Inbox.agent),
        ("enrollment_id", Inbox.enrollment),
    ):
        if filters.get(name):
            query = query.where(column == filters[name])
    text = filters.get("q")
    if text:
        if len(text) > MAX_ADDRESS:
            raise InvalidInput(f"q is longer than an address ({MAX_ADDRESS} characters)", field="q")
        query = query.where(Inbox.address.contains(text.lower()))
    return query


_INBOX_FIELDS = fastsql.all_fields(Inbox)


def _visible_inbox(principal: Principal, inbox_id: str) -> Inbox | None:
    """``visible_inboxes(principal)`` narrowed to one id, in hand-written SQL: every
    mail request starts here (see ``fastsql``)."""
    if principal.kind == "agent":
        tail, params = (
            "WHERE id = ? AND customer_id = ? AND enrollment_id = ?",
            (
                inbox_id,
                principal.customer_id,
                principal.enrollment_id,
            ),
        )
    elif not principal.is_operator:
        tail, params = "WHERE id = ? AND customer_id = ?", (inbox_id, principal.customer_id)
    else:
        tail, params = "WHERE id = ?", (inbox_id,)
    return fastsql.select_one(Inbox, _INBOX_FIELDS, tail, params)


def list_inboxes(principal: Principal, info: RequestInfo, limit, page_token) -> Page:
    page = paginate(visible_inboxes(principal), Inbox.created_at, Inbox.id, parse_limit(limit), page_token)
    audit.record_read("inbox.list", principal=principal, info=info)
    return page


def get_inbox(
    principal: Principal, info: RequestInfo, inbox_id: str, *, audit_read: bool = True, action: str = "inbox.read"
) -> Inbox:
    inbox = _visible_inbox(principal, inbox_id) if well_formed(inbox_id, "inb") else None
    if inbox is None:
        _denied(principal, info, action, "not_found", target=inbox_id)
        exc = NotFound(f"no inbox '{inbox_id[:60]}'")
        exc.audited = True
        raise exc
    if audit_read:
        audit.record_read("inbox.read", principal=principal, info=info, target=inbox.id)
    return inbox


def delete_inbox(postern, principal: Principal, info: RequestInfo, inbox_id: str) -> None:
    """Delete an inbox, free its mailbox slot, and deprovision it; all or nothing."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="inbox.delete")
    with write_transaction():
        deleted = Inbox.delete().where(Inbox.id == inbox.id).execute()
        if not deleted:
            raise NotFound(f"no inbox '{inbox_id}'")  # a concurrent delete won
        EnrollmentKey.update(mailboxes_used=EnrollmentKey.mailboxes_used - 1).where(
            (EnrollmentKey.id == inbox.enrollment_id) & (EnrollmentKey.mailboxes_used > 0)
        ).execute()
        # Its held mail goes by the foreign key; its own policy rows are keyed by id only.
        InboundPolicy.delete().where(
            (InboundPolicy.customer == inbox.customer_id) & (InboundPolicy.scope == inbox.id)
        ).execute()
        RetentionPolicy.delete().where(
            (RetentionPolicy.customer == inbox.customer_id) & (RetentionPolicy.scope == inbox.id)
        ).execute()
        try:
            receiver = postern.backend("receive")
        except BackendUnavailable:
            receiver = None
        if receiver is not None:
            try:
                receiver.deprovision(InboxRef(inbox.id, inbox.customer_id, inbox.address))
            except (TemporaryFailure, PermanentFailure) as exc:
                raise Unavailable(
                    f"the receive backend could not remove the inbox: {exc}",
                    code="deprovisioning_failed",
                    retry_after=getattr(exc, "retry_after", None) or 5,
                ) from exc
        # The tenant's, not the caller's: an operator's delete shows in the org admin's log.
        audit.record("inbox.delete", principal=principal, info=info, target=inbox.id, customer_id=inbox.customer_id)
        webhook_events.inbox_event(postern, "inbox.deleted", inbox)
