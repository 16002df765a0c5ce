"""Request rate limits (docs/limits.md): policies from ``[limits]``, counters shared by
every worker, and the audit trail of refusals kept small under a flood."""

from __future__ import annotations

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.principal import RequestInfo
from postern.core.ratelimits.limiter import ALLOWED, Limiter, Verdict, build_limiter

__all__ = ["ALLOWED", "Limiter", "Verdict", "build_limiter", "audit_in_aggregate", "failure_throttle"]


def audit_in_aggregate(n: int) -> bool:
    """Whether the ``n``-th refusal in a window gets an audit row: the 1st, 10th, 100th…
    A flood of 6,000 attempts leaves 4 rows, each saying how many it had reached."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


def failure_throttle(limiter: Limiter | None):
    """The ``on_failure`` of ``authenticate``/``redeem``: counts a failed authentication
    against the client's address. Within the limit the failure is audited as ever;
    past it the attempt is refused with 429 and audited only in aggregate
    (``auth.throttled``, target ``refused:<n>``), so bad keys cannot fill the audit log."""
    if limiter is None:
        return None

    def on_failure(info: RequestInfo) -> None:
        over = limiter.failed_auth(info.client_addr)
        if not over:
            return
        if audit_in_aggregate(over):
            with write_transaction():
                audit.record(
                    "auth.throttled", principal=None, info=info, outcome="denied", code="rate_limited",
                    target=f"refused:{over}",
                )  # fmt: skip
        exc = limiter.lockout(info.client_addr)
        exc.audited = True
        raise exc

    return on_failure
