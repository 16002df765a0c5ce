"""Builders for tenants, keys and inboxes, through the core as the API would use it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from postern.core import enrollment, tenancy
from postern.core.principal import CLI, SCOPES, RequestInfo

INFO = RequestInfo(request_id="req_test", client_addr="127.0.0.1")
BASE_DOMAIN = "agents.localhost"


@dataclass
class Tenant:
    """One customer with an org admin token and helpers to mint agent keys."""

    label: str
    customer: object
    admin_token: str
    operator_token: str | None = None
    enrollment_keys: list = field(default_factory=list)

    @property
    def domain(self) -> str:
        return f"{self.label}.{BASE_DOMAIN}"

    def enrollment_key(self, scopes=SCOPES, max_mailboxes=10, **kwargs) -> tuple[object, str]:
        kwargs.setdefault("expires_in", dt.timedelta(days=7))
        row, plaintext = enrollment.create_enrollment_key(
            CLI,
            INFO,
            self.customer,
            base_domain=BASE_DOMAIN,
            scopes=list(scopes),
            max_mailboxes=max_mailboxes,
            **kwargs,
        )
        self.enrollment_keys.append(row)
        return row, plaintext

    def agent_key(self, scopes=SCOPES, handle="bot", max_mailboxes=10, ttl=dt.timedelta(hours=1), **kwargs):
        """A fresh enrollment key redeemed once: returns the ``Enrollment`` (``.agent_key`` is the secret)."""
        _, plaintext = self.enrollment_key(scopes, max_mailboxes, **kwargs)
        return enrollment.redeem(INFO, plaintext, handle, agent_key_ttl=ttl)


def make_tenant(label: str) -> Tenant:
    customer = tenancy.create_customer(CLI, INFO, label, label.title())
    _, admin_token = tenancy.create_admin_token(CLI, INFO, customer, f"{label} admin")
    return Tenant(label, customer, admin_token)


def operator_token() -> str:
    return tenancy.create_admin_token(CLI, INFO, None, "operator")[1]
