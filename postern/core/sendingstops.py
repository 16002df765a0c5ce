"""The operator's kill switch for outbound mail (docs/limits.md, "Stopping sending").

A stop names one agent, one enrollment key or one customer. While it stands, sends of
that agent, of any agent of that key, or of anyone in that customer are refused (403
``sending_stopped``) and their queued mail is held, not failed: lifting the stop lets
it leave. Every worker reads the stop from the database on the next send and on the
next delivery attempt, so it takes effect at once everywhere.
"""

from __future__ import annotations

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from postern.core.ids import well_formed
from postern.core.models import Agent, EnrollmentKey, Inbox, Message, SendingStop, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import get_customer
from postern.core.visibility import get_visible, visible

KINDS = ("customer", "enrollment", "agent")


def stopped(customer_id: str, enrollment_id: str | None, agent_id: str | None) -> SendingStop | None:
    """The stop that covers a sender, if any (one indexed query)."""
    cover = (SendingStop.kind == "customer") & (SendingStop.subject_id == customer_id)
    if enrollment_id:
        cover |= (SendingStop.kind == "enrollment") & (SendingStop.subject_id == enrollment_id)
    if agent_id:
        cover |= (SendingStop.kind == "agent") & (SendingStop.subject_id == agent_id)
    return SendingStop.select().where(cover).first()


def stopped_for_inbox(inbox: Inbox) -> SendingStop | None:
    return stopped(inbox.customer_id, inbox.enrollment_id, inbox.agent_id)


def refuse_if_stopped(inbox: Inbox) -> None:
    """Refuse a send from ``inbox`` (403 ``sending_stopped``) while a stop covers it."""
    stop = stopped_for_inbox(inbox)
    if stop is not None:
        reason = f": {stop.reason}" if stop.reason else ""
        raise PermissionDenied(
            f"sending is stopped for this {stop.kind} by the operator{reason}; nothing was sent",
            code="sending_stopped",
        )


def _subject(principal: Principal, kind: str, subject_ref: str) -> tuple[str, str]:
    """(customer id, subject id) of a stop's subject (a customer may be named by its
    label); another tenant's id is a 404, as a missing one."""
    if kind == "customer":
        customer = get_customer(principal, subject_ref)
        return customer.id, customer.id
    model, noun = {"enrollment": (EnrollmentKey, "enrollment key"), "agent": (Agent, "agent")}[kind]
    row = get_visible(model, principal, subject_ref, noun)
    return row.customer_id, row.id


def stop_sending(principal: Principal, info: RequestInfo, kind: str, subject_id: str, reason: str = "") -> SendingStop:
    """Stop one ``kind`` (customer, enrollment, agent) from sending; org admins only
    within their own customer. Stopping what is already stopped is a 409."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if not isinstance(subject_id, str) or not subject_id:
        raise InvalidInput(f"give the {kind}'s id", field="id")
    if not isinstance(reason, str) or len(reason) > 500:
        raise InvalidInput("reason must be text of at most 500 characters", field="reason")
    customer_id, subject_id = _subject(principal, kind, subject_id)
    with write_transaction():
        if SendingStop.get_or_none((SendingStop.kind == kind) & (SendingStop.subject_id == subject_id)):
            raise Conflict(f"sending is already stopped for {kind} '{subject_id}'", code="already_stopped")
        stop = SendingStop.create(
            customer=customer_id,
            kind=kind,
            subject_id=subject_id,
            reason=reason,
            created_at=utcnow(),
            created_by=principal.token_id or principal.kind,
        )
        audit.record("sending.stop", principal=principal, info=info, target=subject_id, customer_id=customer_id)
    return stop


def resume_sending(principal: Principal, info: RequestInfo, stop_id: str) -> None:
    """Lift a stop; mail it held leaves on the outbox's next pass."""
    stop = None
    if well_formed(stop_id, "stp"):
        stop = visible(SendingStop, principal).where(SendingStop.id == stop_id).first()
    if stop is None:
        raise NotFound(f"no sending stop '{stop_id[:60]}'")
    with write_transaction():
        SendingStop.delete().where(SendingStop.id == stop.id).execute()
        # Held mail leaves on the outbox's next pass rather than at its next recheck; one
        # still covered by another stop is simply held again.
        Message.update(next_attempt_at=utcnow()).where(
            (Message.customer == stop.customer_id)
            & (Message.status == "queued")
            & Message.error.startswith("sending stopped")
        ).execute()
        audit.record(
            "sending.resume", principal=principal, info=info, target=stop.subject_id, customer_id=stop.customer_id
        )


def list_stops(principal: Principal) -> list[SendingStop]:
    """Every stop ``principal`` may see, oldest first."""
    return list(visible(SendingStop, principal))
