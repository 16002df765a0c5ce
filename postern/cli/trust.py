"""``postern admin quarantine …``, ``postern admin inbound-policy …`` and ``postern admin
rule …``: mail held back by inbound policy, that policy per customer or inbox, and the
allow and block lists (docs/trust.md)."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, obtain_postern, run
from postern.core import mailrules
from postern.core import quarantine as held
from postern.core.mail.messageview import view_of
from postern.core.mail.policy import ACTIONS
from postern.core.principal import CLI
from postern.core.views import inbound_policy_json, mail_rule_json, message_json, quarantined_json


@click.group()
def quarantine():
    """Mail held back by inbound policy: list, show, release, discard."""


@quarantine.command("list")
@click.option("--inbox", "inbox_id", help="Only this inbox's (inb_…).")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def quarantine_list(ctx, inbox_id, limit, as_json):
    """List held messages, oldest first."""
    rows = run(ctx, lambda: [quarantined_json(q) for q in held.visible_held(CLI, inbox_id).limit(limit)])
    lines = [f"{r['id']}\t{r['inbox_id']}\t{r['reason']}\t{r['from'] or '-'}\t{r['subject']}" for r in rows]
    emit(as_json, rows, "\n".join(lines))


@quarantine.command("show")
@click.argument("held_id")
@json_option
@click.pass_context
def quarantine_show(ctx, held_id, as_json):
    """Show a held message: why it was held, its verdict, headers and text."""
    postern = obtain_postern(ctx)

    def read():
        row = held.get_held(CLI, held_id)
        return quarantined_json(row, held.parsed_held(postern, row))

    data = run(ctx, read)
    auth = data["authentication"] or {}
    text = (
        f"{data['id']} held for {data['reason']} in {data['inbox_id']} at {data['created_at']}\n"
        f"From: {data['from']} (envelope {data['envelope_from'] or '<>'})\nSubject: {data['subject']}\n"
        f"spf={auth.get('spf', '-')} dmarc={auth.get('dmarc', '-')} policy={auth.get('dmarc_policy') or '-'} "
        f"aligned={auth.get('aligned', '-')}\n\n{data['text']}"
    )
    emit(as_json, data, text)


@quarantine.command("release")
@click.argument("held_id")
@json_option
@click.pass_context
def quarantine_release(ctx, held_id, as_json):
    """Deliver a held message into its inbox, as new mail for the agent."""
    postern = obtain_postern(ctx)
    data = run(ctx, lambda: message_json(view_of(held.release(postern, CLI, INFO, held_id)), full=False))
    emit(as_json, data, f"released {held_id} as {data['id']} into {data['inbox_id']}")


@quarantine.command("discard")
@click.argument("held_id")
@json_option
@click.pass_context
def quarantine_discard(ctx, held_id, as_json):
    """Delete a held message for good."""
    run(ctx, lambda: held.discard(CLI, INFO, held_id))
    emit(as_json, {"id": held_id, "discarded": True}, f"discarded {held_id}")


ACTION = click.Choice([*ACTIONS, "inherit"])


@click.command("inbound-policy")
@click.option("--customer", "customer_ref", help="The customer (id or label) whose policy to show or set.")
@click.option("--inbox", "inbox_id", help="An inbox (inb_…): its own policy instead of its customer's.")
@click.option("--dmarc-reject", type=ACTION, help="Mail failing DMARC with p=reject.")
@click.option("--unauthenticated", type=ACTION, help="Mail with no aligned SPF or DKIM pass.")
@json_option
@click.pass_context
def inbound_policy(ctx, customer_ref, inbox_id, dmarc_reject, unauthenticated, as_json):
    """Show the inbound policy of a customer or inbox; with --dmarc-reject or
    --unauthenticated, set it first ('inherit' clears this level's choice)."""
    if not customer_ref and not inbox_id:
        raise click.UsageError("name a --customer or an --inbox")
    postern = obtain_postern(ctx)
    changes = {
        question: None if value == "inherit" else value
        for question, value in (("dmarc_reject", dmarc_reject), ("unauthenticated", unauthenticated))
        if value is not None
    }

    def act():
        if changes:
            return held.set_policy(postern, CLI, INFO, changes, customer_ref, inbox_id)
        return held.read_policy(postern, CLI, INFO, customer_ref, inbox_id)

    data = inbound_policy_json(run(ctx, act))
    lines = [
        f"{q}: {data['effective'][q]} ({'set here' if data[q] else 'inherited'})"
        for q in ("dmarc_reject", "unauthenticated")
    ]
    level = data["inbox_id"] or data["customer_id"]
    emit(as_json, data, f"{level}\n" + "\n".join(lines))


@click.group("rule")
def rule():
    """Allow and block lists: for receiving (the authenticated sender) or sending (each
    recipient), for a customer, an enrollment key or an inbox."""


@rule.command("add")
@click.argument("direction", type=click.Choice(["receive", "send"]))
@click.argument("action", type=click.Choice(["allow", "block"]))
@click.argument("pattern")
@click.option("--customer", "customer_ref", help="A customer-wide entry (id or label).")
@click.option("--enrollment", "enrollment_id", help="An entry for every inbox of this enrollment key (enr_…).")
@click.option("--inbox", "inbox_id", help="An entry for one inbox (inb_…).")
@click.option("--description", default="")
@json_option
@click.pass_context
def rule_add(ctx, direction, action, pattern, customer_ref, enrollment_id, inbox_id, description, as_json):
    """Add an entry; PATTERN is an address or a domain (its subdomains too)."""
    if not (customer_ref or enrollment_id or inbox_id):
        raise click.UsageError("name a --customer, an --enrollment or an --inbox")
    body = {"direction": direction, "action": action, "pattern": pattern, "description": description}
    levels = {"customer_id": customer_ref, "enrollment_id": enrollment_id, "inbox_id": inbox_id}
    body.update({k: v for k, v in levels.items() if v})
    data = mail_rule_json(run(ctx, lambda: mailrules.create_rule(CLI, INFO, body)))
    emit(as_json, data, _rule_line(data))


@rule.command("list")
@click.option("--direction", type=click.Choice(["receive", "send"]))
@click.option("--inbox", "inbox_id")
@click.option("--enrollment", "enrollment_id")
@json_option
@click.pass_context
def rule_list(ctx, direction, inbox_id, enrollment_id, as_json):
    """List entries, oldest first."""
    filters = {"direction": direction, "inbox_id": inbox_id, "enrollment_id": enrollment_id}
    rows = run(ctx, lambda: [mail_rule_json(r) for r in mailrules.visible_rules(CLI, filters)])
    emit(as_json, rows, "\n".join(_rule_line(r) for r in rows))


@rule.command("remove")
@click.argument("rule_id")
@json_option
@click.pass_context
def rule_remove(ctx, rule_id, as_json):
    """Remove an entry."""
    run(ctx, lambda: mailrules.delete_rule(CLI, INFO, rule_id))
    emit(as_json, {"id": rule_id, "removed": True}, f"removed {rule_id}")


def _rule_line(r: dict) -> str:
    where = r["inbox_id"] or r["enrollment_id"] or r["customer_id"]
    return f"{r['id']}\t{r['direction']}\t{r['action']}\t{r['pattern']}\t{r['level']} {where}"
