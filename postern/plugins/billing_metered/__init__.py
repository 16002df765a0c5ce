"""Billing backend ``metered`` (docs/billing.md): plans in config, checked against the
usage ledger before each metered action.

A plan gives each metered action (``inbox.create``, counted in inboxes, and
``message.send``, counted in recipients: what the ledger's ``quantity`` holds) an
``included`` quantity, an optional hard ``cap`` per period and an informational
``overage`` price per unit above ``included``. The period is the UTC calendar month.
The ledger (``postern.core.usage``) is the one source of truth: nothing is counted
here, so a restart, a second worker or a replayed request cannot make the count drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from postern.core import usage
from postern.core.backends import BillingBackend, QuotaDecision
from postern.core.hookspecs import hookimpl
from postern.core.models import Customer, utcnow
from postern.core.options import option

#: Metered action -> the ``usage.Usage`` field that counts it.
METERED = {usage.INBOX_CREATED: "inboxes_created", usage.MESSAGE_SENT: "recipients"}
LIMIT_CODE = "plan_limit_reached"


@dataclass(frozen=True)
class Allowance:
    """One action's terms in a plan; ``cap`` None: no hard cap."""

    included: int = 0
    cap: int | None = None
    overage: float = 0.0


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of 0 or more, got {value!r}")
    return value


def _allowance(where: str, raw: Any) -> Allowance:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table with included, cap and overage")
    unknown = set(raw) - {"included", "cap", "overage"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {', '.join(sorted(unknown))}; known: included, cap, overage")
    included = _count(f"{where}.included", raw.get("included", 0))
    cap = None if raw.get("cap") is None else _count(f"{where}.cap", raw["cap"])
    overage = raw.get("overage", 0.0)
    if isinstance(overage, bool) or not isinstance(overage, int | float) or overage < 0:
        raise ValueError(f"{where}.overage must be a price of 0 or more, got {overage!r}")
    if cap is not None and cap < included:
        raise ValueError(f"{where}: cap ({cap}) is below included ({included})")
    return Allowance(included, cap, float(overage))


def _plans(raw: Mapping[str, Any]) -> dict[str, dict[str, Allowance]]:
    """``plans`` checked: each plan a table of metered actions. An action may be written
    ``inbox_create`` (a bare TOML key) or ``"inbox.create"``."""
    if not raw:
        raise ValueError("must define at least one plan")
    plans = {}
    for name, actions in raw.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"plan '{name}' must be a table of actions ({', '.join(METERED)})")
        plan = {}
        for key, terms in actions.items():
            action = key.replace("_", ".")
            if action not in METERED:
                raise ValueError(f"plan '{name}': '{key}' is not a metered action; known: {', '.join(METERED)}")
            plan[action] = _allowance(f"{name}.{key}", terms)
        plans[name] = plan
    return plans


@dataclass(frozen=True)
class MeteredOptions:
    plans: Mapping[str, Any] = option(help="[billing.metered.plans.<name>] tables", check=_plans)
    #: The plan of a customer ``customers`` does not name; "" with one plan: that one.
    default_plan: str = option("")
    #: Customer id or label -> plan name.
    customers: Mapping[str, str] = option({})
    currency: str = option("USD")

    def __post_init__(self):
        if not self.default_plan and len(self.plans) == 1:
            object.__setattr__(self, "default_plan", next(iter(self.plans)))
        if not self.default_plan:
            raise ValueError("default_plan is required when there is more than one plan")
        for who, plan in {"default_plan": self.default_plan, **self.customers}.items():
            if plan not in self.plans:
                raise ValueError(f"{who} names plan '{plan}', which is not defined; defined: {', '.join(self.plans)}")


@dataclass(frozen=True)
class Line:
    """One action of a customer's statement for the current period."""

    action: str
    used: int
    included: int
    cap: int | None
    overage_units: int
    overage_cost: float


class MeteredBilling(BillingBackend):
    """Plans from config; refuses an action that would take a customer over its cap."""

    name = "metered"
    description = "plans in config: included quantities, hard caps and overage per month"
    options_class = MeteredOptions

    def __init__(self, options: MeteredOptions):
        self.options = options

    def plan_of(self, customer_id: str) -> str:
        customers = self.options.customers
        if customer_id in customers:
            return customers[customer_id]
        if customers:  # assignments may name the label instead
            label = Customer.select(Customer.label).where(Customer.id == customer_id).scalar()
            if label in customers:
                return customers[label]
        return self.options.default_plan

    def check(self, customer_id: str, action: str, quantity: int = 1, info=None) -> QuotaDecision:
        plan = self.plan_of(customer_id)
        terms = self.options.plans[plan].get(action)
        if terms is None or terms.cap is None:  # not metered by this plan, or no hard cap
            return QuotaDecision(allowed=True)
        now = utcnow()
        since, until = usage.period(None, None, now)  # this calendar month, UTC
        used = getattr(usage.summary(customer_id, since=since, until=until), METERED[action])
        if used + quantity <= terms.cap:
            return QuotaDecision(allowed=True)
        unit = "recipients" if action == usage.MESSAGE_SENT else "inboxes"
        reason = (
            f"plan '{plan}' allows {terms.cap} {unit} of {action} per month; {used} used, {quantity} asked; "
            f"the period resets at {until.isoformat()}Z"
        )
        return QuotaDecision(False, reason, retry_after=(until - now).total_seconds(), code=LIMIT_CODE)

    def record(self, customer_id: str, action: str, quantity: int = 1) -> None:
        """Nothing to record: the action writes its own ledger row."""

    def statement(self, customer_id: str, now: dt.datetime | None = None) -> list[Line]:
        """The current period's usage of each metered action against the customer's
        plan, with the overage (informational: Postern charges nothing itself)."""
        since, until = usage.period(None, None, now)
        summary = usage.summary(customer_id, since=since, until=until)
        lines = []
        for action, terms in self.options.plans[self.plan_of(customer_id)].items():
            used = getattr(summary, METERED[action])
            over = max(0, used - terms.included)
            lines.append(Line(action, used, terms.included, terms.cap, over, round(over * terms.overage, 6)))
        return lines


@hookimpl
def postern_register_backends(register):
    register("billing", MeteredBilling.name, MeteredBilling)
