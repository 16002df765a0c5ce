"""What is limited: rates read from ``[limits]``, named ``<subject>_<class>``.

A request is counted once per subject it belongs to (its agent key, that key's
enrollment, its customer; or, without a valid key, its client address) under its
route class. The names are what a 429 and the ``RateLimit-Policy`` header quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from postern.core.errors import ConfigError

ROUTE_CLASSES = ("read", "write", "send", "wait", "enroll")
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` requests per window of ``seconds``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        period = next(name for name, length in PERIODS.items() if length == self.seconds)
        return f"{self.count} per {period}"


@dataclass(frozen=True)
class Policy:
    """A named rate, e.g. ``agent_send`` = 30 per minute."""

    name: str
    rate: Rate


def parse_rate(text: str) -> Rate | None:
    """``"60/minute"`` (or ``"60 per minute"``) as a Rate; ``""`` is no limit (None)."""
    if not text.strip():
        return None
    match = _RATE.match(text.lower())
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"'{text}' is not a rate like '60/minute' (periods: {', '.join(PERIODS)})")
    return Rate(int(match.group(1)), PERIODS[match.group(2)])


def check_rates(section) -> None:
    """Refuse a ``[limits]`` section with a rate that does not parse, at load time."""
    if section.recipients_per_message < 0:
        raise ConfigError("limits.recipients_per_message must be 0 (no cap of its own) or more")
    if not 0 <= section.fresh_domain_days <= 365:
        raise ConfigError("limits.fresh_domain_days must be from 0 (no ramp) to 365")
    for f in _rate_fields(section):
        try:
            parse_rate(getattr(section, f.name))
        except ValueError as exc:
            raise ConfigError(f"limits.{f.name}: {exc}") from None


def policies(section) -> dict[str, Policy]:
    """Every configured limit by name; a name missing here is not limited."""
    found = {}
    for f in _rate_fields(section):
        rate = parse_rate(getattr(section, f.name))
        if rate is not None and f.name != RAMP:
            found[f.name] = Policy(f.name, rate)
    return found


def _rate_fields(section):
    """The fields of ``[limits]`` that hold a rate (strings other than ``storage``)."""
    return [f for f in fields(section) if f.type in ("str", str) and f.name != "storage"]


#: Rates that ``policies`` leaves out: charged with a rate decided per request.
RAMP = "fresh_domain_new_recipients"
