"""``postern admin usage``: what each customer used over a period (docs/usage.md)."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, run
from postern.core import usage
from postern.core.principal import CLI
from postern.core.views import usage_json

METRICS = (
    "inboxes_created",
    "messages_sent",
    "recipients",
    "bytes_sent",
    "messages_received",
    "bytes_received",
    "bytes_stored",
)


@click.command("usage")
@click.option("--customer", "customer_ref", help="A customer (id or label); default: every customer.")
@click.option("--since", help="ISO 8601 time; default: the start of this month (UTC).")
@click.option("--until", help="ISO 8601 time, exclusive; default: the end of this month.")
@json_option
@click.pass_context
def usage_cmd(ctx, customer_ref, since, until, as_json):
    """Show usage over a period: one customer's, or every customer's."""

    def report():
        if customer_ref:
            return [usage.read_usage(CLI, INFO, customer_ref, since, until)]
        return usage.read_every_customer(CLI, INFO, since, until)

    rows = [usage_json(u) for u in run(ctx, report)]
    emit(as_json, rows[0] if customer_ref else rows, "\n\n".join(_text(row) for row in rows) or "no customers")


def _text(row: dict) -> str:
    lines = [f"{row['customer_id']}  {row['since']} .. {row['until']}"]
    lines += [f"  {name:18} {row[name]}" for name in METRICS]
    lines += [f"  api_calls.{name:8} {count}" for name, count in row["api_calls"].items()]
    return "\n".join(lines)
