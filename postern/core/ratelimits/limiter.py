"""The rate limiter: which counters a request charges, and what a refusal says.

Fixed windows aligned to the clock (a minute's window starts on the minute), so
every worker and host agrees on the window without talking to each other, and a
client can be told exactly when it resets. The cost is the known edge: up to twice
a limit can pass around a window boundary; docs/limits.md says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from postern.core.errors import RateLimited
from postern.core.ratelimits.counters import Counters, MemoryCounters, PostgresCounters, SqliteCounters, charge
from postern.core.ratelimits.policy import Policy, policies

FAILED_AUTH = "ip_failed_auth"


@dataclass(frozen=True)
class Usage:
    """One policy as a request left it: ``hits`` in the window, ``reset`` seconds left."""

    policy: Policy
    hits: int
    reset: int
    #: The counter: its key and window, for counting refusals in aggregate.
    key: str = ""
    window: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.policy.rate.count - self.hits)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    usages: tuple[Usage, ...]

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-Policy`` (every policy the request counted against) and
        ``RateLimit`` (the one closest to its end), draft-ietf-httpapi-ratelimit-headers."""
        if not self.usages:
            return {}
        closest = min(self.usages, key=lambda u: (u.remaining, -u.reset))
        return {
            "RateLimit-Policy": ", ".join(
                f'"{u.policy.name}";q={u.policy.rate.count};w={u.policy.rate.seconds}' for u in self.usages
            ),
            "RateLimit": f'"{closest.policy.name}";r={closest.remaining};t={closest.reset}',
        }

    def refusal(self) -> RateLimited:
        """The 429 for a refused verdict: names the policy that refused it."""
        over = [u for u in self.usages if u.hits > u.policy.rate.count] or list(self.usages)
        worst = max(over, key=lambda u: u.reset)
        exc = RateLimited(
            f"rate limit '{worst.policy.name}' ({worst.policy.rate}) reached; retry in {worst.reset} s",
            code="rate_limited",
            retry_after=worst.reset,
        )
        exc.limit = worst.policy.name
        exc.headers = Verdict(False, (worst,)).headers()
        exc.counter = (worst.key, worst.window)
        return exc


ALLOWED = Verdict(True, ())


class Limiter:
    """Charges requests against the configured policies in shared ``counters``."""

    def __init__(self, section, counters: Counters, clock=time.time):
        self.policies = policies(section)
        self.counters = counters
        self.clock = clock

    def _window(self, policy: Policy, now: float) -> tuple[int, int]:
        """The window ``now`` falls in and the whole seconds until it ends (at least 1)."""
        length = policy.rate.seconds
        start = int(now // length * length)
        return start, max(1, math.ceil(start + length - now))

    def charge(
        self, subjects: dict[str, str | None], route_class: str, client: str | None = None, amount: int = 1
    ) -> Verdict:
        """Count one request of ``route_class`` (or ``amount``: a send's recipients)
        against each subject's policy (``{"agent": id, "enrollment": id, "customer": id}``
        or ``{"ip": address}``), all or none. A client address locked out by failed
        sign-ins is refused too."""
        return self.charge_all(
            [(kind, subject_id, route_class, amount) for kind, subject_id in subjects.items()], client
        )

    def charge_all(self, items, client: str | None = None, extra=()) -> Verdict:
        """``charge`` over ``(kind, subject_id, class, amount)`` items, in one step: a
        send counts its message and its recipients together, or neither. ``extra``:
        ``(policy, subject_id, amount)`` items whose rate is decided per request."""
        chosen = [
            (self.policies[f"{kind}_{route_class}"], subject_id, amount)
            for kind, subject_id, route_class, amount in items
            if subject_id and f"{kind}_{route_class}" in self.policies
        ]
        return self.charge_policies([*chosen, *extra], client)

    def charge_policies(self, chosen: list[tuple[Policy, str, int]], client: str | None = None) -> Verdict:
        """Charge ``(policy, subject_id, amount)`` items, all or none: for a policy whose
        rate is decided per request (a fresh domain's ramp) rather than configured."""
        now = self.clock()
        entries, resets = [], {}
        for policy, subject_id, amount in chosen:
            start, resets[policy.name] = self._window(policy, now)
            entries.append((f"{policy.name}:{subject_id}", start, policy.rate.count, amount))
        gate = self._gate(client, now)
        if not entries and gate is None:
            return ALLOWED
        allowed, counts = charge(self.counters, entries, gate[:3] if gate else None)
        if gate is not None and gate[0] in counts:  # locked out: say which limit, and when it ends
            return Verdict(False, (Usage(gate[3], counts[gate[0]] + 1, gate[4], gate[0], gate[1]),))
        usages = tuple(
            Usage(policy, counts[key], resets[policy.name], key, start)
            for (policy, _, _), (key, start, _, _) in zip(chosen, entries, strict=True)
        )
        return Verdict(allowed, usages)

    def require(self, subjects, route_class, client=None, amount: int = 1) -> Verdict:
        """``charge``, raising the 429 when refused."""
        verdict = self.charge(subjects, route_class, client, amount)
        if not verdict.allowed:
            raise verdict.refusal()
        return verdict

    def _gate(self, client: str | None, now: float):
        policy = self.policies.get(FAILED_AUTH)
        if policy is None or not client:
            return None
        start, reset = self._window(policy, now)
        return f"{FAILED_AUTH}:{client}", start, policy.rate.count, policy, reset

    def failed_auth(self, client: str | None) -> int:
        """Count one failed authentication from ``client``; return how far past the limit
        it now is (0 while within it, 1 for the first refused attempt, …)."""
        gate = self._gate(client, self.clock())
        if gate is None:
            return 0
        hits = self.counters.add(gate[0], gate[1])
        return max(0, hits - gate[2])

    def lockout(self, client: str | None) -> RateLimited:
        """The 429 for a client past its failed-authentication limit."""
        gate = self._gate(client, self.clock())
        return Verdict(False, (Usage(gate[3], gate[2] + 1, gate[4], gate[0], gate[1]),)).refusal()

    def count_refusal(self, exc: RateLimited) -> int:
        """Count a refusal of ``exc``'s counter in its window; return how many so far."""
        key, window = exc.counter
        return self.counters.add(f"refused:{key}", window)


def build_limiter(section, database_url: str) -> Limiter | None:
    """The limiter ``[limits]`` asks for, or None when limits are off."""
    if not section.enabled:
        return None
    if section.storage == "memory":
        return Limiter(section, MemoryCounters())
    if database_url.startswith("sqlite:///"):
        main = Path(database_url.removeprefix("sqlite:///"))
        return Limiter(section, SqliteCounters(main.with_name(main.name + "-ratelimits")))
    return Limiter(section, PostgresCounters())
