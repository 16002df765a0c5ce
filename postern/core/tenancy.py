"""Customers (tenants), their mail domains, and org admin tokens."""

from __future__ import annotations

import peewee

from postern.core import audit, keys, zonebell
from postern.core.db import write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from postern.core.ids import well_formed
from postern.core.models import AdminToken, Customer, utcnow
from postern.core.names import LABEL, InvalidName, normalise_label
from postern.core.principal import Principal, RequestInfo
from postern.core.visibility import get_visible, visible


def tenant_domain(base_domain: str, customer: Customer) -> str:
    """The subdomain a tenant receives mail on, e.g. ``acme.agents.example.org``."""
    return f"{customer.label}.{base_domain}"


#: Labels of the hosts dns_builtin publishes under the mail domain by default (ns1, ns2,
#: mail): a tenant zone of that name would shadow them and break delegation for everyone.
RESERVED_LABELS = frozenset({"ns1", "ns2", "mail"})


def create_customer(principal: Principal, info: RequestInfo, label: str, name: str) -> Customer:
    if not principal.is_operator:
        raise PermissionDenied("only an operator token can create customers", code="operator_only")
    try:
        label = normalise_label(label)
    except InvalidName as exc:
        raise InvalidInput(str(exc), field="label") from None
    if label in RESERVED_LABELS:
        raise InvalidInput(f"'{label}' names one of Postern's own hosts; choose another label", field="label")
    name = (name or label).strip()
    if len(name) > 200:
        raise InvalidInput("name is longer than 200 characters", field="name")
    try:
        with write_transaction():
            customer = Customer.create(label=label, name=name)
            audit.record("customer.create", principal=principal, info=info, target=customer.id, customer_id=customer.id)
    except peewee.IntegrityError:
        raise Conflict(f"a customer with label '{label}' exists", code="label_taken") from None
    zonebell.ring([f"label:{label}"])  # its zone answers at once
    return customer


def set_suspended(principal: Principal, info: RequestInfo, customer_ref: str, suspended: bool) -> Customer:
    """Suspend or resume a customer (operators only). While suspended its admin tokens
    and agent keys are refused, its enrollment keys cannot be redeemed, mail to its
    inboxes is deferred (450) and its queued mail waits; nothing is deleted."""
    customer = get_customer(principal, customer_ref)  # another tenant's id: 404, as a missing one
    if not principal.is_operator:
        raise PermissionDenied("only an operator can suspend or resume customers", code="operator_only")
    with write_transaction():
        if suspended:
            Customer.update(suspended_at=utcnow()).where(
                (Customer.id == customer.id) & Customer.suspended_at.is_null()
            ).execute()
        else:
            Customer.update(suspended_at=None).where(Customer.id == customer.id).execute()
        audit.record(
            "customer.suspend" if suspended else "customer.resume",
            principal=principal,
            info=info,
            target=customer.id,
            customer_id=customer.id,
        )
    return Customer.get_by_id(customer.id)


def is_suspended(customer_id: str | None) -> bool:
    if customer_id is None:
        return False
    return (
        Customer.select(Customer.id).where((Customer.id == customer_id) & Customer.suspended_at.is_null(False)).exists()
    )


def visible_customers(principal: Principal):
    return visible(Customer, principal, tenant_field=Customer.id)


def get_customer(principal: Principal, customer_id_or_label: str) -> Customer:
    """A customer by id or label, as ``principal`` may see it (404 otherwise)."""
    ref = customer_id_or_label
    if well_formed(ref, "cus"):
        customer = Customer.get_or_none(Customer.id == ref)
    elif LABEL.fullmatch(ref.lower()):
        customer = Customer.get_or_none(Customer.label == ref.lower())
    else:
        customer = None
    if customer is None or not (principal.is_operator or principal.customer_id == customer.id):
        raise NotFound(f"no customer '{ref[:60]}'")
    return customer


def named_customer(principal: Principal, customer_ref: str | None) -> Customer:
    """The customer an admin call is about: ``customer_ref`` (id or label) as
    ``get_customer`` finds it, or the caller's own tenant when it names none. An
    operator belongs to no tenant, so it must name one."""
    ref = customer_ref or principal.customer_id
    if not ref:
        raise InvalidInput("customer_id is required with an operator token", field="customer_id")
    return get_customer(principal, ref)


def create_admin_token(
    principal: Principal, info: RequestInfo, customer: Customer | None, description: str = ""
) -> tuple[AdminToken, str]:
    """Mint an org admin token (operator-wide when ``customer`` is None); plaintext once."""
    if not principal.is_operator:
        raise PermissionDenied("only an operator can mint admin tokens", code="operator_only")
    minted = keys.mint("admin")
    with write_transaction():
        token = AdminToken.create(
            customer=customer, key_hash=minted.hash, key_prefix=minted.prefix, description=description[:200]
        )
        audit.record(
            "admin_token.create",
            principal=principal,
            info=info,
            target=token.id,
            customer_id=customer.id if customer else None,
        )
    return token, minted.plaintext


def visible_admin_tokens(principal: Principal):
    return visible(AdminToken, principal)


def revoke_admin_token(principal: Principal, info: RequestInfo, token_id: str) -> AdminToken:
    """Revoke an admin token; effective on its next request. Operators only."""
    if not principal.is_operator:
        raise PermissionDenied("only an operator can revoke admin tokens", code="operator_only")
    row = get_visible(AdminToken, principal, token_id, "admin token")
    with write_transaction():
        AdminToken.update(revoked_at=utcnow()).where(
            (AdminToken.id == row.id) & AdminToken.revoked_at.is_null()
        ).execute()
        audit.record("admin_token.revoke", principal=principal, info=info, target=row.id, customer_id=row.customer_id)
    return AdminToken.get_by_id(row.id)
