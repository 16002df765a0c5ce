"""``postern admin retention …``: how long a customer's or an inbox's mail is kept, and
the sweep that deletes what is older (docs/retention.md)."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, run
from postern.core.mail import retention as policy
from postern.core.principal import CLI
from postern.core.views import retention_json


def _level(customer_ref, inbox_id):
    if bool(customer_ref) == bool(inbox_id):
        raise click.UsageError("name one --customer or one --inbox")


def _days(value: str) -> int | None:
    if value.strip().lower() == "forever":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not a number of days (1 to {policy.MAX_DAYS}) or 'forever'", param_hint="DAYS"
        ) from None


def _show(as_json, data: dict) -> None:
    level = data["inbox_id"] or data["customer_id"]
    effective = "forever" if data["effective_days"] is None else f"{data['effective_days']} days"
    if data["set"]:
        source = "set here"
    elif data["inbox_id"]:
        source = "from its customer" if data["effective_days"] is not None else "not set: kept forever"
    else:
        source = "not set: kept forever"
    emit(as_json, data, f"{level}\nretention: {effective} ({source})")


@click.group("retention")
def retention():
    """How long mail is kept: per customer, or per inbox (which wins over its customer)."""


@retention.command("show")
@click.option("--customer", "customer_ref", help="A customer (id or label).")
@click.option("--inbox", "inbox_id", help="An inbox (inb_…): its own setting, or its customer's.")
@json_option
@click.pass_context
def retention_show(ctx, customer_ref, inbox_id, as_json):
    """Show the retention of a customer or an inbox, and what applies."""
    _level(customer_ref, inbox_id)
    _show(as_json, retention_json(run(ctx, lambda: policy.read_retention(CLI, INFO, customer_ref, inbox_id))))


@retention.command("set")
@click.argument("days")
@click.option("--customer", "customer_ref", help="A customer (id or label).")
@click.option("--inbox", "inbox_id", help="An inbox (inb_…): wins over its customer's setting.")
@json_option
@click.pass_context
def retention_set(ctx, days, customer_ref, inbox_id, as_json):
    """Keep mail DAYS days after it was received (1 to 36500), or 'forever'. The
    outbox service deletes older mail every few minutes."""
    _level(customer_ref, inbox_id)
    value = _days(days)
    view = run(ctx, lambda: policy.set_retention(CLI, INFO, value, customer_ref, inbox_id))
    _show(as_json, retention_json(view))


@retention.command("clear")
@click.option("--customer", "customer_ref", help="A customer (id or label): its mail is then kept forever.")
@click.option("--inbox", "inbox_id", help="An inbox (inb_…): it then follows its customer's setting.")
@json_option
@click.pass_context
def retention_clear(ctx, customer_ref, inbox_id, as_json):
    """Remove the setting of a customer or an inbox."""
    _level(customer_ref, inbox_id)
    _show(as_json, retention_json(run(ctx, lambda: policy.clear_retention(CLI, INFO, customer_ref, inbox_id))))


@retention.command("purge")
@json_option
@click.pass_context
def retention_purge(ctx, as_json):
    """Run the retention sweep now, until no expired mail is left (the outbox service
    runs it every few minutes)."""

    def sweep():
        total = 0
        while purged := policy.purge_expired():
            total += purged
        return total

    total = run(ctx, sweep)
    emit(as_json, {"purged": total}, f"purged {total} message(s)")
