"""Allow and block lists as admins manage them and agents read them (the rules
themselves, and how mail meets them: postern.core.mail.rules)."""

from __future__ import annotations

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.enrollment import get_enrollment_key
from postern.core.errors import InvalidInput
from postern.core.inboxes import get_inbox
from postern.core.mail.rules import DIRECTIONS, RULE_ACTIONS, applying, normalise_pattern
from postern.core.models import MailRule
from postern.core.principal import Principal, RequestInfo
from postern.core.visibility import get_visible, visible

FIELDS = {"direction", "action", "pattern", "customer_id", "enrollment_id", "inbox_id", "description"}
#: Entries one customer may hold: lists are for senders and recipients a human names,
#: and every message's check reads those that apply.
MAX_RULES_PER_CUSTOMER = 1000


def _choice(body: dict, name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}", field=name)
    return value


def _level(principal: Principal, info: RequestInfo, body: dict) -> dict:
    """Which customer, enrollment key or inbox the entry is for, as ``principal`` may see it."""
    from postern.core.tenancy import named_customer

    inbox_id, enrollment_id = body.get("inbox_id"), body.get("enrollment_id")
    for name in ("inbox_id", "enrollment_id", "customer_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidInput(f"{name} must be a string", field=name)
    if inbox_id and enrollment_id:
        raise InvalidInput("give inbox_id or enrollment_id, not both: an entry has one level", field="enrollment_id")
    if inbox_id:
        inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="mail_rule.create")
        return {"customer": inbox.customer_id, "inbox": inbox.id}
    if enrollment_id:
        key = get_enrollment_key(principal, enrollment_id)
        return {"customer": key.customer_id, "enrollment": key.id}
    return {"customer": named_customer(principal, body.get("customer_id")).id}


def create_rule(principal: Principal, info: RequestInfo, body: dict) -> MailRule:
    unknown = set(body) - FIELDS
    if unknown:
        raise InvalidInput(f"unknown field '{sorted(unknown)[0]}'", field=sorted(unknown)[0])
    direction = _choice(body, "direction", DIRECTIONS)
    action = _choice(body, "action", RULE_ACTIONS)
    pattern = normalise_pattern(body.get("pattern"))
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise InvalidInput("description must be a string of at most 200 characters", field="description")
    level = _level(principal, info, body)
    with write_transaction():
        if MailRule.select().where(MailRule.customer == level["customer"]).count() >= MAX_RULES_PER_CUSTOMER:
            raise InvalidInput(f"a customer holds at most {MAX_RULES_PER_CUSTOMER} entries", field="pattern")
        rule = MailRule.create(direction=direction, action=action, pattern=pattern, description=description, **level)
        audit.record(
            "mail_rule.create",
            principal=principal,
            info=info,
            target=rule.id,
            customer_id=rule.customer_id,
            code=f"{direction} {action}",
        )
    return rule


def visible_rules(principal: Principal, filters: dict):
    query = visible(MailRule, principal)
    for name, column in (("direction", MailRule.direction), ("action", MailRule.action)):
        if filters.get(name):
            query = query.where(column == filters[name])
    if filters.get("inbox_id"):
        query = query.where(MailRule.inbox == filters["inbox_id"])
    if filters.get("enrollment_id"):
        query = query.where(MailRule.enrollment == filters["enrollment_id"])
    return query


def get_rule(principal: Principal, rule_id: str) -> MailRule:
    return get_visible(MailRule, principal, rule_id, "mail rule")


def delete_rule(principal: Principal, info: RequestInfo, rule_id: str) -> None:
    rule = get_rule(principal, rule_id)
    with write_transaction():
        MailRule.delete().where(MailRule.id == rule.id).execute()
        audit.record("mail_rule.delete", principal=principal, info=info, target=rule.id, customer_id=rule.customer_id)


def rules_of_inbox(principal: Principal, info: RequestInfo, inbox_id: str) -> list[MailRule]:
    """Every entry that applies to an inbox, both directions: what an agent may read
    of the lists that bind it (it cannot change them)."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="mail_rule.list")
    audit.record_read("mail_rule.list", principal=principal, info=info, target=inbox.id)
    found = [r for d in DIRECTIONS for r in applying(inbox.customer_id, inbox.enrollment_id, inbox.id, d)]
    return sorted(found, key=lambda r: (r.direction, r.created_at, r.id))
