"""``postern admin queue list|retry|cancel``: the outbound queue, as ``mailq`` and a
flush show it on a mail server (docs/mail.md, "Outbound queue")."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, obtain_postern, run
from postern.core import outqueue
from postern.core.principal import CLI
from postern.core.views import iso


@click.group("queue")
def queue():
    """List, retry now or cancel outbound mail waiting to leave."""


def _line(entry: dict) -> str:
    held = "  [attempt under way]" if entry["under_attempt"] else ""
    error = f"\n    last error: {entry['error']}" if entry["error"] else ""
    return (
        f"{entry['id']}  {entry['status']:8} {entry['from']} -> {', '.join(entry['recipients'])}\n"
        f"    attempts {entry['attempts']}, queued {entry['queued_at']}, next {entry['next_attempt_at']}{held}{error}"
    )


@queue.command("list")
@click.option("--customer", "customer_ref", help="Only this customer's mail (id or label).")
@click.option("--limit", default=200, show_default=True, help="At most this many messages.")
@json_option
@click.pass_context
def list_queue(ctx, customer_ref, limit, as_json):
    """Queued and sending mail, the next attempt first."""
    rows = run(ctx, lambda: outqueue.list_queue(CLI, customer_ref, limit))
    for row in rows:
        for key in ("queued_at", "next_attempt_at"):
            row[key] = iso(row[key])
    emit(as_json, rows, "\n".join(_line(r) for r in rows) or "the outbound queue is empty")


@queue.command("retry")
@click.argument("message_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every queued message (a flush).")
@click.pass_context
def retry(ctx, message_id, every):
    """Attempt MESSAGE_ID (or, with --all, every queued message) on the outbox's next pass."""
    if bool(message_id) == every:
        raise click.UsageError("give a message id or --all")
    moved = run(ctx, lambda: outqueue.retry(CLI, INFO, message_id))
    click.echo(f"{moved} message(s) due now; the outbox attempts them on its next pass")


@queue.command("cancel")
@click.argument("message_id")
@click.pass_context
def cancel(ctx, message_id):
    """Cancel a queued message: it never leaves; the agent sees status cancelled."""
    postern = obtain_postern(ctx)
    message = run(ctx, lambda: outqueue.cancel(postern, CLI, INFO, message_id))
    click.echo(f"cancelled {message.id}")
