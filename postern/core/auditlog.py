"""Reading the audit log, filtered and paged, as a principal may see it."""

from __future__ import annotations

import datetime as dt

from postern.core.errors import InvalidInput
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
            try:
                moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidInput(f"{name} must be an ISO 8601 time", field=name) from None
            if moment.tzinfo is not None:
                try:
                    moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
                except OverflowError:
                    raise InvalidInput(f"{name} is out of range", field=name) from None
            query = query.where(op(moment))
    return paginate_newest_first(query, AuditEvent.id, parse_limit(limit), page_token)
