"""``postern admin approvals list|approve|reject|require``: human approval of outbound
mail (docs/mail.md, "Human approval"), as the local operator."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, obtain_postern, run
from postern.core import approval
from postern.core.mail.messageview import view_of
from postern.core.principal import CLI
from postern.core.views import enrollment_key_json, inbox_json, pending_json


@click.group("approvals")
def approvals():
    """Review outbound mail held for approval, or require approval of a key or inbox."""


def _line(m: dict) -> str:
    to = ", ".join(m["envelope_to"])
    expires = f"  expires {m['approval_expires_at']}" if m["approval_expires_at"] else ""
    return f"{m['id']}  {m['status']:16} from {m['from']['address']} to {to}: {m['subject']!r}{expires}"


@approvals.command("list")
@click.option("--customer", "customer_ref", help="Only this customer's (id or label).")
@click.option("--limit", type=click.IntRange(1, approval.MAX_LIST), default=50, show_default=True)
@json_option
@click.pass_context
def list_pending(ctx, customer_ref, limit, as_json):
    """Mail waiting for approval, oldest first."""
    rows = run(ctx, lambda: [pending_json(view_of(m)) for m in approval.list_pending(CLI, customer_ref, limit)])
    emit(as_json, rows, "\n".join(_line(r) for r in rows) or "nothing is waiting for approval")


@approvals.command("approve")
@click.argument("message_id")
@json_option
@click.pass_context
def approve(ctx, message_id, as_json):
    """Send a pending message as the agent wrote it (it cannot be edited)."""
    postern = obtain_postern(ctx)
    row = run(ctx, lambda: pending_json(view_of(approval.approve(postern, CLI, INFO, message_id))))
    emit(as_json, row, f"approved: {_line(row)}")


@approvals.command("reject")
@click.argument("message_id")
@click.option("--note", default="", help="Why; the agent reads it in the message's review_note.")
@json_option
@click.pass_context
def reject(ctx, message_id, note, as_json):
    """Refuse a pending message: it is never sent."""
    postern = obtain_postern(ctx)
    row = run(ctx, lambda: pending_json(view_of(approval.reject(postern, CLI, INFO, message_id, note))))
    emit(as_json, row, f"rejected: {_line(row)}")


@approvals.command("require")
@click.option("--enrollment", "enrollment_id", help="Every inbox of this enrollment key.")
@click.option("--inbox", "inbox_id", help="This one inbox.")
@click.option("--off", is_flag=True, help="Stop requiring approval (mail already held stays held).")
@json_option
@click.pass_context
def require(ctx, enrollment_id, inbox_id, off, as_json):
    """Require (or, with --off, stop requiring) approval of outbound mail."""
    if bool(enrollment_id) == bool(inbox_id):
        raise click.UsageError("give exactly one of --enrollment, --inbox")
    kind, ref = ("enrollment", enrollment_id) if enrollment_id else ("inbox", inbox_id)
    row = run(ctx, lambda: approval.set_required(CLI, INFO, kind, ref, not off))
    data = enrollment_key_json(row) if kind == "enrollment" else inbox_json(row)
    emit(as_json, data, f"{row.id}: approval {'required' if row.require_approval else 'not required'}")
