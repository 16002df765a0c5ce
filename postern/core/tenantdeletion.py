"""Deleting a customer (operators only), after it was suspended.

Two steps on purpose: suspension stops everything at once and can be undone; deletion
cannot. Every inbox is deleted through ``delete_inbox`` first, so the receive backend
forgets its mailboxes as for any inbox; then one transaction removes the customer and,
by foreign key, its keys, agents, mail, webhooks and their deliveries, DKIM keys and
settings. Its DNS zone stops answering at once (the zone bell). Audit rows are kept: the
log outlives the rows it describes.
"""

from __future__ import annotations

from postern.core import audit, zonebell
from postern.core.db import write_transaction
from postern.core.errors import Conflict, NotFound, PermissionDenied
from postern.core.inboxes import delete_inbox
from postern.core.models import Customer, Inbox
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import get_customer


def delete_customer(postern, principal: Principal, info: RequestInfo, customer_ref: str) -> Customer:
    customer = get_customer(principal, customer_ref)  # another tenant's id: 404, as a missing one
    if not principal.is_operator:
        raise PermissionDenied("only an operator can delete customers", code="operator_only")
    if customer.suspended_at is None:
        raise Conflict(
            f"suspend customer '{customer.label}' before deleting it (deletion cannot be undone)",
            code="customer_not_suspended",
        )
    for inbox_id in [i.id for i in Inbox.select(Inbox.id).where(Inbox.customer == customer.id)]:
        try:
            delete_inbox(postern, principal, info, inbox_id)
        except NotFound:
            pass  # deleted meanwhile
    with write_transaction():
        if not Customer.delete().where(Customer.id == customer.id).execute():
            raise NotFound(f"no customer '{customer_ref[:60]}'")  # a concurrent delete won
        audit.record("customer.delete", principal=principal, info=info, target=customer.id, customer_id=customer.id)
    zonebell.ring([f"label:{customer.label}"])  # its zone stops answering at once
    return customer
