"""The per-customer suppression list and one-click unsubscribe (docs/deliverability.md,
"Suppression list").

An address on a customer's list gets no more mail from that customer: the send path
drops it (``suppressed_among``), bounce and complaint handling add to it (``suppress``),
a recipient adds itself through an RFC 8058 link (``unsubscribe``), and admins list,
add and remove entries. Each customer has its own list: one tenant's bounces never
silence another tenant's mail.

Unsubscribe links carry a random token; only its SHA-256 is stored, as for every other
secret Postern hands out, so a copy of the database cannot unsubscribe anyone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import Conflict, InvalidInput
from postern.core.mail.compose import validate_address
from postern.core.models import Suppression, UnsubscribeToken, utcnow
from postern.core.pagination import Page, paginate, parse_limit
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import get_customer
from postern.core.views import iso
from postern.core.visibility import get_visible, visible

REASONS = ("bounce", "complaint", "unsubscribe", "manual")
MAX_ADDRESS = 320
MAX_DETAIL = 500
#: What ``secrets.token_urlsafe(24)`` gives (32 characters), with room to lengthen it
#: later; anything else is answered as unknown without reaching the database.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,100}")


def suppression_json(row: Suppression) -> dict:
    """One entry of a suppression list."""
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "address": row.address,
        "reason": row.reason,
        "detail": row.detail,
        "message_id": row.message_id,
        "created_at": iso(row.created_at),
        "created_by": row.created_by,
    }


# -- the send path and bounce handling ------------------------------------------------


def suppressed_among(customer_id: str, addresses: Iterable[str]) -> set[str]:
    """Which of ``addresses`` (compared lower-cased) the customer must not mail, in one
    query; the result is lower-cased."""
    wanted = {a.strip().lower() for a in addresses if isinstance(a, str)}
    if not wanted:
        return set()
    query = Suppression.select(Suppression.address).where(
        (Suppression.customer == customer_id) & Suppression.address.in_(sorted(wanted))
    )
    return {address for (address,) in query.tuples()}


def suppress(
    customer_id: str,
    address: str,
    reason: str,
    detail: str = "",
    message_id: str | None = None,
    by: str = "system",
) -> bool:
    """Put ``address`` on the customer's list; whether it was new. An address already
    listed keeps its first reason (a bounce after an unsubscribe says nothing new).

    Joins the caller's transaction when there is one (bounce handling records the
    bounce and the suppression together). The row is its own record of who added it
    and why, so this writes no audit row; admin and unsubscribe changes do.
    """
    if reason not in REASONS:
        raise InvalidInput(f"reason must be one of {', '.join(REASONS)}", field="reason")
    if not isinstance(address, str) or not address.strip() or len(address.strip()) > MAX_ADDRESS:
        raise InvalidInput(f"address must be text of 1 to {MAX_ADDRESS} characters", field="address")
    # A bounce's diagnostic can run long; the list keeps the start of it.
    detail = (detail or "")[:MAX_DETAIL]
    with write_transaction():
        # One statement, so two bounces for the same address at once cannot both insert.
        inserted = (
            Suppression.insert(
                customer=customer_id,
                address=address.strip().lower(),
                reason=reason,
                detail=detail,
                message_id=message_id,
                created_at=utcnow(),
                created_by=(by or "system")[:40],
            )
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
    return bool(inserted)


def _listed(customer_id: str, address: str) -> Suppression | None:
    return Suppression.get_or_none((Suppression.customer == customer_id) & (Suppression.address == address))


# -- admins -----------------------------------------------------------------------------


def list_suppressions(
    principal: Principal,
    customer_ref: str | None = None,
    reason: str | None = None,
    limit: int | str | None = None,
    page_token: str | None = None,
    address: str | None = None,
) -> Page:
    """A page of the entries ``principal`` may see, oldest first: an operator's of every
    customer (or of ``customer_ref``), an org admin's of its own; optionally only one
    ``reason`` or one ``address``."""
    query = visible(Suppression, principal)
    if customer_ref:
        query = query.where(Suppression.customer == get_customer(principal, customer_ref).id)
    if reason:
        if reason not in REASONS:
            raise InvalidInput(f"reason must be one of {', '.join(REASONS)}", field="reason")
        query = query.where(Suppression.reason == reason)
    if address:
        query = query.where(Suppression.address == address.strip().lower())
    return paginate(query, Suppression.created_at, Suppression.id, parse_limit(limit), page_token)


def add_suppression(
    principal: Principal, info: RequestInfo, customer_ref: str | None, address: str, detail: str = ""
) -> Suppression:
    """An admin suppresses ``address`` for a customer (reason ``manual``). An org admin
    may leave the customer out (its own); an operator must name one. An address already
    listed is a 409 that names the reason it is listed for."""
    if customer_ref is not None and not isinstance(customer_ref, str):
        raise InvalidInput("customer must be a customer's id or label", field="customer")
    address = validate_address(address, "address")
    if detail is None:
        detail = ""
    if not isinstance(detail, str) or len(detail) > MAX_DETAIL:
        raise InvalidInput(f"detail must be text of at most {MAX_DETAIL} characters", field="detail")
    ref = customer_ref or principal.customer_id
    if not ref:
        raise InvalidInput("name the customer (id or label) with an operator token", field="customer")
    customer = get_customer(principal, ref)  # another tenant's: 404, as a missing one
    by = principal.token_id or principal.kind
    with write_transaction():
        if not suppress(customer.id, address, "manual", detail, by=by):
            existing = _listed(customer.id, address)
            raise Conflict(
                f"'{address}' is already suppressed ({existing.reason}, {existing.id})", code="already_suppressed"
            )
        row = _listed(customer.id, address)
        audit.record("suppression.add", principal=principal, info=info, target=address, customer_id=customer.id)
    return row


def remove_suppression(principal: Principal, info: RequestInfo, suppression_id: str) -> None:
    """Take an entry off the list: the customer may mail the address again."""
    row = get_visible(Suppression, principal, suppression_id, "suppression")
    with write_transaction():
        Suppression.delete().where(Suppression.id == row.id).execute()
        audit.record(
            "suppression.remove", principal=principal, info=info, target=row.address, customer_id=row.customer_id
        )


# -- one-click unsubscribe (RFC 8058) ----------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def unsubscribe_token(customer_id: str, address: str, message_id: str | None = None) -> str:
    """A new token for the unsubscribe link of one recipient of one message; only its
    hash is kept. Joins the caller's transaction (the send that adds the header)."""
    if not isinstance(address, str) or not address.strip() or len(address.strip()) > MAX_ADDRESS:
        raise InvalidInput(f"address must be text of 1 to {MAX_ADDRESS} characters", field="address")
    token = secrets.token_urlsafe(24)
    with write_transaction():
        UnsubscribeToken.create(
            token_hash=_hash(token),
            customer=customer_id,
            address=address.strip().lower(),
            message_id=message_id,
            created_at=utcnow(),
        )
    return token


def token_address(token: str) -> UnsubscribeToken | None:
    """The link a token belongs to, or None for an unknown or malformed one. The lookup
    is by hash: timing can tell an attacker nothing about a stored token."""
    if not isinstance(token, str) or TOKEN_SHAPE.fullmatch(token) is None:
        return None
    return UnsubscribeToken.get_or_none(UnsubscribeToken.token_hash == _hash(token))


def unsubscribe(token: str, info: RequestInfo | None = None) -> Suppression | None:
    """Suppress the address a link was made for (reason ``unsubscribe``); None for an
    unknown token. Idempotent: a second use answers the entry already there, whatever
    its reason, and adds nothing."""
    link = token_address(token)
    if link is None:
        return None
    with write_transaction():
        added = suppress(
            link.customer_id,
            link.address,
            "unsubscribe",
            "one-click unsubscribe (RFC 8058)",
            message_id=link.message_id,
            by="unsubscribe",
        )
        if added:
            audit.record(
                "suppression.unsubscribe",
                principal=None,
                info=info or RequestInfo(),
                target=link.address,
                customer_id=link.customer_id,
            )
        return _listed(link.customer_id, link.address)
