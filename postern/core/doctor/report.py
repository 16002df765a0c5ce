"""A finding of ``postern doctor`` (and of a backend's ``probe``), and how a list of
them is shown and turned into an exit status.

This module imports nothing of Postern: ``postern.core.backends`` re-exports
``Finding`` for the backends that probe what they depend on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"
STATUSES = (OK, WARN, FAIL)
SYMBOLS = {OK: "✓", WARN: "!", FAIL: "✗"}
#: Exit status of ``postern doctor`` by the worst finding.
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """One thing checked: ``check`` names it ("ports.smtp", "receive.wildduck.api"),
    ``detail`` says what was found (for the operator: it may name hosts and paths),
    ``fix`` what to do about it (empty when nothing is to be done). ``reason`` is the
    same in a few words naming no host or path, for ``/healthz``, which answers anyone;
    empty: the status alone is said."""

    check: str
    status: str
    detail: str
    fix: str = ""
    reason: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"a finding's status is one of {', '.join(STATUSES)}, not {self.status!r}")

    def as_json(self) -> dict:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(check: str, detail: str) -> Finding:
    return Finding(check, OK, detail)


def warn(check: str, detail: str, fix: str, reason: str = "") -> Finding:
    return Finding(check, WARN, detail, fix, reason)


def fail(check: str, detail: str, fix: str, reason: str = "") -> Finding:
    return Finding(check, FAIL, detail, fix, reason)


def worst(findings: Iterable[Finding]) -> str:
    statuses = {f.status for f in findings}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when every finding is OK, 1 when some are WARN (none FAIL), 2 when any FAIL."""
    return EXIT_CODES[worst(findings)]


def render(findings: list[Finding]) -> str:
    """One line per finding with its symbol, the fix indented under it, and a summary."""
    lines = []
    for finding in findings:
        lines.append(f"{SYMBOLS[finding.status]} {finding.status:<4} {finding.check}: {finding.detail}")
        if finding.fix and finding.status != OK:
            lines.append(f"         fix: {finding.fix}")
    counts = {status: sum(f.status == status for f in findings) for status in STATUSES}
    lines.append(f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s)")
    return "\n".join(lines)
