"""``postern admin …``: operator commands run against the database directly.

They act as the local operator (audited with actor ``cli``); each has ``--json``.
"""

from __future__ import annotations

import datetime as dt
import re

import click

from postern.cli.context import INFO, emit, json_option, obtain_config, obtain_postern, run
from postern.core import enrollment, tenancy, tenantdeletion
from postern.core.auditlog import query_audit
from postern.core.inboxes import search_inboxes
from postern.core.mail import reading
from postern.core.models import Inbox
from postern.core.pagination import paginate, parse_limit
from postern.core.principal import CLI
from postern.core.views import (
    admin_token_json,
    agent_key_json,
    audit_json,
    customer_json,
    enrollment_key_json,
    inbox_json,
    message_json,
)

DURATION = re.compile(r"^(\d+)([smhdw]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: What a mail body must not send to the operator's terminal: escape sequences (ESC, CSI)
#: can retitle it or rewrite what it shows. Line breaks and tabs stay.
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def parse_duration(value: str) -> dt.timedelta:
    match = DURATION.fullmatch(value.strip().lower())
    if not match:
        raise click.BadParameter(f"'{value}' is not a duration such as 90m, 12h, 7d or 3600")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds > 10 * 366 * 86400:
        raise click.BadParameter(f"'{value}' is longer than ten years")
    return dt.timedelta(seconds=seconds)


@click.group()
def admin():
    """Administer customers, keys and the audit log (local operator)."""


@admin.group()
def customer():
    """Customers (tenants)."""


@customer.command("create")
@click.option("--label", required=True, help="DNS label: the tenant's mail subdomain.")
@click.option("--name", help="Display name (default: the label).")
@json_option
@click.pass_context
def customer_create(ctx, label, name, as_json):
    """Create a customer."""
    base = obtain_config(ctx).mail.domain
    created = run(ctx, lambda: tenancy.create_customer(CLI, INFO, label, name or label))
    data = {**customer_json(created), "domain": tenancy.tenant_domain(base, created)}
    emit(as_json, data, f"{created.id}\t{created.label}\t{data['domain']}")


@customer.command("suspend")
@click.argument("customer_ref")
@json_option
@click.pass_context
def customer_suspend(ctx, customer_ref, as_json):
    """Suspend a customer: its keys are refused, mail to it deferred, its queued mail held."""
    row = run(ctx, lambda: tenancy.set_suspended(CLI, INFO, customer_ref, True))
    emit(as_json, customer_json(row), f"suspended {row.id} ({row.label})")


@customer.command("delete")
@click.argument("customer_ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def customer_delete(ctx, customer_ref, yes, as_json):
    """Delete a suspended customer with its inboxes, mail, keys, webhooks and DNS zone.
    Cannot be undone; the audit log keeps its rows."""
    if not yes:
        click.confirm(f"Delete customer '{customer_ref}' and everything it owns? This cannot be undone", abort=True)
    postern = obtain_postern(ctx)  # the receive backend forgets each inbox, as for the API
    row = run(ctx, lambda: tenantdeletion.delete_customer(postern, CLI, INFO, customer_ref))
    emit(as_json, customer_json(row), f"deleted {row.id} ({row.label})")


@customer.command("resume")
@click.argument("customer_ref")
@json_option
@click.pass_context
def customer_resume(ctx, customer_ref, as_json):
    """Resume a suspended customer."""
    row = run(ctx, lambda: tenancy.set_suspended(CLI, INFO, customer_ref, False))
    emit(as_json, customer_json(row), f"resumed {row.id} ({row.label})")


@customer.command("list")
@json_option
@click.pass_context
def customer_list(ctx, as_json):
    """List customers."""
    rows = run(ctx, lambda: [customer_json(c) for c in tenancy.visible_customers(CLI)])
    emit(as_json, rows, "\n".join(f"{r['id']}\t{r['label']}\t{r['name']}" for r in rows))


@admin.group()
def token():
    """Org admin tokens (pk_admin_…) for the admin API."""


@token.command("create")
@click.option("--customer", "customer_ref", help="Limit the token to this customer (id or label).")
@click.option("--description", default="")
@json_option
@click.pass_context
def token_create(ctx, customer_ref, description, as_json):
    """Mint an admin token; without --customer it is operator-wide. Shown once."""

    def mint():
        cust = tenancy.get_customer(CLI, customer_ref) if customer_ref else None
        return tenancy.create_admin_token(CLI, INFO, cust, description)

    row, plaintext = run(ctx, mint)
    data = {"id": row.id, "customer_id": row.customer_id, "key_prefix": row.key_prefix, "admin_token": plaintext}
    emit(as_json, data, f"{plaintext}\n(id {row.id}; shown once: store it now)")


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx, as_json):
    """List admin tokens (never their secrets)."""
    rows = run(ctx, lambda: [admin_token_json(t) for t in tenancy.visible_admin_tokens(CLI)])
    lines = [
        f"{r['id']}\t{r['key_prefix']}…\t{r['customer_id'] or 'operator'}\t{r['revoked_at'] or 'active'}" for r in rows
    ]
    emit(as_json, rows, "\n".join(lines))


@token.command("revoke")
@click.argument("token_id")
@json_option
@click.pass_context
def token_revoke(ctx, token_id, as_json):
    """Revoke an admin token."""
    row = run(ctx, lambda: tenancy.revoke_admin_token(CLI, INFO, token_id))
    emit(as_json, admin_token_json(row), f"revoked {row.id} ({row.key_prefix}…)")


@admin.group("enroll-key")
def enroll_key():
    """Enrollment keys (pk_enroll_…) that agents redeem."""


@enroll_key.command("create")
@click.option("--customer", "customer_ref", required=True, help="Customer id or label.")
@click.option("--scopes", required=True, help="Comma-separated: mailbox:create,mailbox:read,mailbox:send.")
@click.option("--max-mailboxes", type=int, required=True)
@click.option("--expires-in", default="7d", show_default=True, help="e.g. 12h, 7d.")
@click.option("--domain", "domains", multiple=True, help="Allowed domain (repeatable); default the tenant's.")
@click.option("--max-redemptions", type=int)
@click.option("--description", default="")
@click.option("--require-approval", is_flag=True, help="Outbound mail of its inboxes waits for a human.")
@json_option
@click.pass_context
def enroll_key_create(
    ctx,
    customer_ref,
    scopes,
    max_mailboxes,
    expires_in,
    domains,
    max_redemptions,
    description,
    require_approval,
    as_json,
):
    """Mint an enrollment key. Shown once."""
    base = obtain_config(ctx).mail.domain
    lifetime = parse_duration(expires_in)

    def mint():
        cust = tenancy.get_customer(CLI, customer_ref)
        return enrollment.create_enrollment_key(
            CLI,
            INFO,
            cust,
            base_domain=base,
            scopes=scopes,
            max_mailboxes=max_mailboxes,
            expires_in=lifetime,
            domains=list(domains) or None,
            max_redemptions=max_redemptions,
            description=description,
            require_approval=require_approval,
        )

    row, plaintext = run(ctx, mint)
    data = {**enrollment_key_json(row), "enrollment_key": plaintext}
    emit(as_json, data, f"{plaintext}\n(id {row.id}; expires {data['expires_at']}; shown once: store it now)")


@enroll_key.command("list")
@json_option
@click.pass_context
def enroll_key_list(ctx, as_json):
    """List enrollment keys (never their secrets)."""
    rows = run(ctx, lambda: [enrollment_key_json(k) for k in enrollment.visible_enrollment_keys(CLI)])
    lines = [
        f"{r['id']}\t{r['key_prefix']}…\t{r['customer_id']}\t{r['mailboxes_used']}/{r['max_mailboxes']}\t"
        f"{'revoked' if r['revoked_at'] else 'expires ' + r['expires_at']}"
        for r in rows
    ]
    emit(as_json, rows, "\n".join(lines))


@enroll_key.command("revoke")
@click.argument("key_id")
@click.option("--revoke-agent-keys", is_flag=True, help="Also revoke every agent key it minted.")
@json_option
@click.pass_context
def enroll_key_revoke(ctx, key_id, revoke_agent_keys, as_json):
    """Revoke an enrollment key: no further redemptions."""
    count = run(ctx, lambda: enrollment.revoke_enrollment_key(CLI, INFO, key_id, revoke_agent_keys=revoke_agent_keys))
    emit(
        as_json,
        {"id": key_id, "revoked": True, "agent_keys_revoked": count},
        f"revoked {key_id}; {count} agent key(s) revoked with it",
    )


@admin.group("agent-key")
def agent_key():
    """Agent keys (pk_agent_…)."""


@agent_key.command("revoke")
@click.argument("key_id")
@json_option
@click.pass_context
def agent_key_revoke(ctx, key_id, as_json):
    """Revoke one agent key; no other key is affected."""
    row = run(ctx, lambda: enrollment.revoke_agent_key(CLI, INFO, key_id))
    emit(as_json, agent_key_json(row), f"revoked {row.id} ({row.key_prefix}…)")


@admin.group()
def inbox():
    """Inboxes of every tenant: list them; create one for an agent, reserved role
    addresses (postmaster@) included."""


@inbox.command("create")
@click.option("--agent", "agent_id", required=True, help="The agent (agt_…) whose enrollment owns the inbox.")
@click.option("--username", required=True, help="Local part; reserved ones (postmaster, abuse…) are allowed here.")
@click.option("--domain", help="One of the enrollment's allowed domains (default: its first).")
@click.option("--display-name")
@json_option
@click.pass_context
def inbox_create(ctx, agent_id, username, domain, display_name, as_json):
    """Create an inbox for an agent, within its enrollment's quota and domains."""
    from postern.core.inboxes import create_inbox_for_agent

    body = {"username": username, "domain": domain, "display_name": display_name}
    postern = obtain_postern(ctx)  # the receive backend provisions the inbox, as for the API
    row, _ = run(
        ctx, lambda: create_inbox_for_agent(postern, CLI, INFO, agent_id, {k: v for k, v in body.items() if v})
    )
    emit(as_json, inbox_json(row), f"{row.id}\t{row.address}")


@inbox.command("list")
@click.option("--customer", "customer_ref", help="Customer id or label.")
@click.option("--agent", "agent_id", help="Only this agent's (agt_…).")
@click.option("--q", "text", help="Part of the address, any case.")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def inbox_list(ctx, customer_ref, agent_id, text, limit, as_json):
    """List inboxes, oldest first."""

    def query():
        customer_id = tenancy.get_customer(CLI, customer_ref).id if customer_ref else None
        found = search_inboxes(CLI, {"customer_id": customer_id, "agent_id": agent_id, "q": text})
        return [inbox_json(i) for i in paginate(found, Inbox.created_at, Inbox.id, parse_limit(limit), None).items]

    rows = run(ctx, query)
    emit(as_json, rows, "\n".join(f"{r['id']}\t{r['address']}\t{r['created_at']}" for r in rows))


@admin.group()
def message():
    """The mail of any inbox, read as its agent would (audited as the operator's reads),
    and deleted."""


@message.command("list")
@click.argument("inbox_id")
@click.option("--direction", type=click.Choice(reading.DIRECTIONS))
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def message_list(ctx, inbox_id, direction, limit, as_json):
    """List an inbox's messages, newest first."""
    page = run(ctx, lambda: reading.list_messages(CLI, INFO, inbox_id, {"direction": direction}, limit, None))
    rows = [message_json(v) for v in page.items]  # subjects and names are stored as one line of text
    lines = [f"{r['id']}\t{r['received_at']}\t{r['from']['address'] or '-'}\t{r['subject']}" for r in rows]
    emit(as_json, rows, "\n".join(lines))


@message.command("show")
@click.argument("inbox_id")
@click.argument("message_id")
@json_option
@click.pass_context
def message_show(ctx, inbox_id, message_id, as_json):
    """Show one message: who, when, the subject and its text."""
    data = message_json(run(ctx, lambda: reading.get_message(CLI, INFO, inbox_id, message_id)), full=True)
    to = ", ".join(p["address"] for p in data["to"])
    body = TERMINAL_CONTROLS.sub("\ufffd", data["text"])
    text = (
        f"{data['id']} {data['direction']} at {data['received_at']} in {data['inbox_id']}\n"
        f"From: {data['from']['address'] or '-'}\nTo: {to}\nSubject: {data['subject']}\n"
        f"Attachments: {data['attachment_count']}\n\n{body}"
    )
    emit(as_json, data, text)


@message.command("delete")
@click.argument("inbox_id")
@click.argument("message_id")
@json_option
@click.pass_context
def message_delete(ctx, inbox_id, message_id, as_json):
    """Delete one message, its attachments and its download links, for good."""
    from postern.core.mail.deletion import delete_message

    postern = obtain_postern(ctx)
    run(ctx, lambda: delete_message(postern, CLI, INFO, inbox_id, message_id))
    emit(as_json, {"id": message_id, "deleted": True}, f"deleted {message_id}")


@admin.command("audit")
@click.option("--customer", "customer_ref", help="Customer id or label.")
@click.option("--agent", "agent_id")
@click.option("--action")
@click.option("--outcome", type=click.Choice(["ok", "denied", "error"]))
@click.option("--since", help="ISO 8601 time.")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def audit_cmd(ctx, customer_ref, agent_id, action, outcome, since, limit, as_json):
    """Show the audit log, newest first."""

    def query():
        # A label or id like every other --customer; an unknown one is an error, not an empty log.
        customer_id = tenancy.get_customer(CLI, customer_ref).id if customer_ref else None
        filters = {"customer_id": customer_id, "agent_id": agent_id, "action": action, "outcome": outcome}
        return [audit_json(e) for e in query_audit(CLI, {**filters, "since": since}, limit).items]

    rows = run(ctx, query)
    lines = [
        f"{r['at']} {r['outcome']:6} {r['action']:24} {r['actor']:9} {r['key_prefix'] or '-':20} "
        f"{r['target'] or '-'} {r['code'] or ''}"
        for r in rows
    ]
    emit(as_json, rows, "\n".join(lines))
