"""``postern admin suppression list|add|remove``: the per-customer suppression list
(docs/deliverability.md, "Suppression list")."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, run
from postern.core import suppression
from postern.core.pagination import MAX_LIMIT
from postern.core.principal import CLI


@click.group("suppression")
def suppression_cmd():
    """Addresses a customer's mail no longer goes to: bounces, complaints, unsubscribes, entries by hand."""


def _line(row: dict) -> str:
    detail = f"  ({row['detail']})" if row["detail"] else ""
    return f"{row['id']}  {row['customer_id']}  {row['reason']:11} {row['address']}  since {row['created_at']}{detail}"


@suppression_cmd.command("list")
@click.option("--customer", "customer_ref", help="Only this customer's (id or label).")
@click.option("--reason", type=click.Choice(suppression.REASONS), help="Only entries added for this reason.")
@click.option("--address", help="Only this address.")
@json_option
@click.pass_context
def list_cmd(ctx, customer_ref, reason, address, as_json):
    """The entries, oldest first, every page of them."""

    def every_page():
        rows, token = [], None
        while True:
            page = suppression.list_suppressions(CLI, customer_ref, reason, MAX_LIMIT, token, address=address)
            rows += [suppression.suppression_json(r) for r in page.items]
            token = page.next_page_token
            if token is None:
                return rows

    rows = run(ctx, every_page)
    emit(as_json, rows, "\n".join(_line(r) for r in rows) or "no suppressed addresses")


@suppression_cmd.command("add")
@click.option("--customer", "customer_ref", required=True, help="The customer (id or label).")
@click.option("--detail", default="", help="Why, for other admins (at most 500 characters).")
@click.argument("address")
@json_option
@click.pass_context
def add(ctx, customer_ref, detail, address, as_json):
    """Suppress ADDRESS for a customer: its mail to it is dropped from now on."""
    row = run(ctx, lambda: suppression.add_suppression(CLI, INFO, customer_ref, address, detail))
    shown = suppression.suppression_json(row)
    emit(as_json, shown, f"suppressed: {_line(shown)}")


@suppression_cmd.command("remove")
@click.argument("suppression_id")
@click.pass_context
def remove(ctx, suppression_id):
    """Remove an entry (its id from `postern admin suppression list`)."""
    run(ctx, lambda: suppression.remove_suppression(CLI, INFO, suppression_id))
    click.echo(f"removed {suppression_id}")
