"""Reading the audit log, filtered and paged, as a principal may see it."""

from __future__ import annotations

from postern.core.isotime import parse_time
from postern.core.models import AuditEvent
from postern.core.pagination import Page, paginate_newest_first, parse_limit
from postern.core.principal import Principal

FILTERS = ("customer_id", "agent_id", "enrollment_id", "action", "outcome", "request_id")


def query_audit(principal: Principal, filters: dict, limit=None, page_token=None) -> Page:
    query = AuditEvent.select()
    if not principal.is_operator:
        query = query.where(AuditEvent.customer_id == principal.customer_id)
    for name in FILTERS:
        value = filters.get(name)
        if value:
            query = query.where(getattr(AuditEvent, name) == value)
    for name, op in (("since", AuditEvent.at.__ge__), ("until", AuditEvent.at.__lt__)):
        value = filters.get(name)
        if value:
            query = query.where(op(parse_time(value, name)))
    return paginate_newest_first(query, AuditEvent.id, parse_limit(limit), page_token)
