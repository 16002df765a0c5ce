"""What a principal may see: operators everything, everyone else their own tenant.

One place for the rule, so every lookup of another tenant's object answers the same
404 as a missing one.
"""

from __future__ import annotations

from postern.core.errors import NotFound
from postern.core.ids import well_formed
from postern.core.principal import Principal


def visible(model, principal: Principal, tenant_field=None):
    """Rows of ``model`` that ``principal`` may see, oldest first."""
    query = model.select().order_by(model.created_at, model.id)
    if principal.is_operator:
        return query
    field = tenant_field if tenant_field is not None else model.customer
    return query.where(field == principal.customer_id)


def get_visible(model, principal: Principal, object_id: str, noun: str, tenant_field=None):
    """One row by id, or ``NotFound`` when it is missing or belongs to another tenant."""
    prefix = model.id.default().split("_", 1)[0]
    row = None
    if well_formed(object_id, prefix):
        row = visible(model, principal, tenant_field).where(model.id == object_id).first()
    if row is None:
        raise NotFound(f"no {noun} '{object_id[:60]}'")
    return row
