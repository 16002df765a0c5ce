"""Inbound policy: what an inbox does with mail whose sender its checks did not prove
(docs/trust.md, "Policy").

Two questions, each answered ``deliver`` (stored, marked by its verdict), ``quarantine``
(held for a human, never shown to the agent until released) or ``refuse`` (``550 5.7.1``
at DATA, so the sender learns of it and nothing is stored):

- ``dmarc_reject``: the ``From:`` domain publishes DMARC ``p=reject`` and the message
  failed it, the case a domain asks receivers to refuse outright.
- ``unauthenticated``: no passing SPF or DKIM identity aligns with the ``From:`` domain
  (``aligned`` is false), whatever the domain publishes. Allow entries never lift it.

A message meeting both gets the stricter answer. Each question is set per inbox, else
per customer, else by ``[trust]``; a level that leaves one unset inherits it.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.core import fastsql
from postern.core.errors import InvalidInput
from postern.core.mail import rules
from postern.core.models import InboundPolicy

#: From the mildest to the strictest.
ACTIONS = ("deliver", "quarantine", "refuse")
QUESTIONS = ("dmarc_reject", "unauthenticated")


@dataclass(frozen=True)
class Policy:
    dmarc_reject: str
    unauthenticated: str


@dataclass(frozen=True)
class Decision:
    action: str  # deliver | quarantine | refuse
    reason: str = ""  # the question that decided: dmarc_reject | unauthenticated
    #: The checks could not finish (DNS): a refusal is then a 451, so the sender retries.
    temporary: bool = False


DELIVER = Decision("deliver")


def server_policy(config) -> Policy:
    return Policy(config.trust.dmarc_reject, config.trust.unauthenticated)


def levels(customer_id: str, inbox_id: str | None = None) -> dict[str, InboundPolicy]:
    """The rows that set ``customer_id``'s policy (key ``''``) and ``inbox_id``'s."""
    # Hand-written (postern/core/fastsql.py): ingest asks this per recipient whose mail
    # the policy could act on.
    if inbox_id:
        rows = fastsql.select(InboundPolicy, _POLICY_FIELDS, _BOTH_LEVELS, (customer_id, inbox_id))
    else:
        rows = fastsql.select(InboundPolicy, _POLICY_FIELDS, _CUSTOMER_LEVEL, (customer_id,))
    return {row.scope: row for row in rows}


_POLICY_FIELDS = fastsql.all_fields(InboundPolicy)
_BOTH_LEVELS = "WHERE customer_id = ? AND scope IN ('', ?)"
_CUSTOMER_LEVEL = "WHERE customer_id = ? AND scope = ''"


def effective(config, customer_id: str, inbox_id: str | None = None) -> Policy:
    """The policy mail to ``inbox_id`` (or, without it, the customer's) is handled by."""
    rows = levels(customer_id, inbox_id)
    chosen = {}
    for question in QUESTIONS:
        values = [getattr(rows[s], question) for s in (inbox_id, "") if s is not None and s in rows]
        chosen[question] = next((v for v in values if v), getattr(server_policy(config), question))
    return Policy(**chosen)


def check_action(question: str, value) -> str | None:
    """``value`` as an action for ``question`` (None: inherit), or ``InvalidInput``."""
    if value is None or value in ACTIONS:
        return value
    raise InvalidInput(f"{question} must be one of {', '.join(ACTIONS)}, or null to inherit", field=question)


UNLISTED = rules.Listed()


def decide(verdict, policy: Policy, listed: rules.Listed = UNLISTED) -> Decision:
    """The answer for a message with ``verdict`` (postern.core.mail.verdicts.Verdict)
    whose sender the allow and block lists judged ``listed``."""
    if listed.blocked:
        return Decision("refuse", "blocked")
    found = []
    if verdict.dmarc == "fail" and verdict.dmarc_policy == "reject":
        found.append(Decision(policy.dmarc_reject, "dmarc_reject"))
    if not verdict.aligned:
        unfinished = verdict.skipped or "temperror" in (verdict.spf, verdict.dmarc)
        unfinished = unfinished or any(s.result == "temperror" for s in verdict.dkim)
        found.append(Decision(policy.unauthenticated, "unauthenticated", temporary=bool(unfinished)))
        if verdict.dmarc == "temperror" and policy.dmarc_reject == "refuse":
            # The From domain's policy could not be read: it may be p=reject. Where that
            # is refused, defer (451): the retry is judged again, and nothing is lost.
            # Holding every unaligned mail for a human during a DNS outage would make
            # people do DNS's job, so quarantine and deliver leave it to 'unauthenticated'.
            found.append(Decision("refuse", "dmarc_reject", temporary=True))
    if listed.not_allowed:
        found.append(Decision("quarantine", "not_allowed"))
    if not found:
        return DELIVER
    return max(found, key=lambda d: ACTIONS.index(d.action))


def needs_policy(verdict) -> bool:
    """Whether the policy could act on ``verdict``: proven mail costs no policy lookup."""
    return not verdict.aligned or (verdict.dmarc == "fail" and verdict.dmarc_policy == "reject")


def decisions(config, verdict, inboxes: dict, identity: str | None, claims=()) -> dict[str, Decision]:
    """Each recipient address's answer (``inboxes`` maps address to its ``Inbox``);
    ``identity`` is the authenticated sender (``rules.identity_of``), ``claims`` the
    addresses the message claims (From, envelope), which only block entries meet."""
    answers = {}
    for address, inbox in inboxes.items():
        entries = rules.applying(inbox.customer_id, inbox.enrollment_id, inbox.id, "receive")
        listed = rules.judge(entries, identity, claims)
        if needs_policy(verdict) or listed.blocked or listed.not_allowed:
            answers[address] = decide(verdict, effective(config, inbox.customer_id, inbox.id), listed)
        else:
            answers[address] = DELIVER
    return answers


REFUSALS = {
    "blocked": "550 5.7.1 Refused: the recipient does not accept mail from this sender",
    "dmarc_reject": "550 5.7.1 Refused: the sender's domain publishes DMARC p=reject and this message failed it",
    "unauthenticated": "550 5.7.1 Refused: the sender is not authenticated (no aligned SPF or DKIM pass)",
}
TEMPORARY = "451 4.7.0 Could not authenticate the sender now, try again later"


def refusal(answers: dict[str, Decision]) -> str | None:
    """The DATA reply when every recipient refuses; None when any takes the message (a
    recipient that refuses beside one that does not has it quarantined instead: SMTP
    has one reply for all, and holding it loses nothing)."""
    if not answers or any(d.action != "refuse" for d in answers.values()):
        return None
    if any(d.temporary for d in answers.values()):
        return TEMPORARY
    reasons = {d.reason for d in answers.values()}
    return REFUSALS[next(r for r in ("blocked", "dmarc_reject", "unauthenticated") if r in reasons)]


def held(answers: dict[str, Decision]) -> dict[str, str]:
    """Addresses whose copy is quarantined, with the reason (see ``refusal``)."""
    return {a: d.reason for a, d in answers.items() if d.action in ("quarantine", "refuse")}
