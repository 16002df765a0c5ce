"""``postern admin sending stop|resume|list``: the operator's kill switch for outbound
mail (docs/limits.md, "Stopping sending")."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, run
from postern.core import sendingstops
from postern.core.principal import CLI
from postern.core.views import sending_stop_json


@click.group("sending")
def sending():
    """Stop or resume the outbound mail of a customer, an enrollment key or an agent."""


def _line(stop: dict) -> str:
    reason = f"  ({stop['reason']})" if stop["reason"] else ""
    return f"{stop['id']}  {stop['kind']:10} {stop['subject_id']}  since {stop['created_at']}{reason}"


@sending.command("stop")
@click.option("--customer", "customer_id", help="Stop every agent of this customer (id or label).")
@click.option("--enrollment", "enrollment_id", help="Stop every agent of this enrollment key.")
@click.option("--agent", "agent_id", help="Stop this one agent.")
@click.option("--reason", default="", help="Told to the agent whose send is refused.")
@json_option
@click.pass_context
def stop(ctx, customer_id, enrollment_id, agent_id, reason, as_json):
    """Stop sending at once: new sends are refused (403 sending_stopped), queued mail is held."""
    named = [
        (kind, ref)
        for kind, ref in (("customer", customer_id), ("enrollment", enrollment_id), ("agent", agent_id))
        if ref
    ]
    if len(named) != 1:
        raise click.UsageError("give exactly one of --customer, --enrollment, --agent")
    kind, ref = named[0]
    made = run(ctx, lambda: sendingstops.stop_sending(CLI, INFO, kind, ref, reason))
    emit(as_json, sending_stop_json(made), f"stopped: {_line(sending_stop_json(made))}")


@sending.command("resume")
@click.argument("stop_id")
@click.pass_context
def resume(ctx, stop_id):
    """Lift a stop (its id from `postern admin sending list`); held mail leaves soon after."""
    run(ctx, lambda: sendingstops.resume_sending(CLI, INFO, stop_id))
    click.echo(f"lifted {stop_id}")


@sending.command("list")
@json_option
@click.pass_context
def list_stops(ctx, as_json):
    """The stops in force."""
    rows = [sending_stop_json(s) for s in run(ctx, lambda: sendingstops.list_stops(CLI))]
    emit(as_json, rows, "\n".join(_line(r) for r in rows) or "no sending stops")
