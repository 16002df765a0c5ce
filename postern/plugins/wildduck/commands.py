"""``postern wildduck app-password INBOX``: IMAP access to an agent's mailbox for a
human, as a WildDuck application password shown once (WildDuck keeps only a hash)."""

from __future__ import annotations

import json

import click

from postern.core import audit
from postern.core.backends import BackendError
from postern.core.db import write_transaction
from postern.core.principal import CLI, RequestInfo

INFO = RequestInfo(request_id=None, client_addr="cli")


def issue_app_password(postern, inbox_id: str, description: str) -> dict:
    """Create an IMAP-only application password for the inbox's WildDuck user; audited.
    Returns what a mail client needs: host, port, TLS, username, password."""
    from postern.core.models import Inbox
    from postern.plugins.wildduck.models import WildDuckMailbox

    receiver = postern.backend("receive")
    row = WildDuckMailbox.get_or_none(WildDuckMailbox.inbox == inbox_id)
    inbox = Inbox.get_or_none(Inbox.id == inbox_id)
    if row is None or inbox is None:
        raise click.ClickException(f"no WildDuck mailbox for inbox '{inbox_id}'")
    try:
        password = receiver.api.create_app_password(row.user_id, description)
    except BackendError as exc:
        raise click.ClickException(f"WildDuck did not issue the password: {exc}") from exc
    with write_transaction():
        audit.record(
            "inbox.app_password",
            principal=CLI,
            info=INFO,
            target=inbox.id,
            customer_id=inbox.customer_id,
            enrollment_id=inbox.enrollment_id,
            agent_id=inbox.agent_id,
        )
    return {
        "inbox_id": inbox.id,
        "imap_host": receiver.options.imap_host,
        "imap_port": receiver.options.imap_port,
        "imap_tls": receiver.options.imap_tls,
        "username": inbox.address,
        "password": password,
    }


def register(cli: click.Group) -> None:
    @cli.group(name="wildduck")
    def wildduck():
        """WildDuck mailboxes (receive backend 'wildduck')."""

    @wildduck.command(name="app-password")
    @click.argument("inbox_id")
    @click.option("--description", default="postern app password", help="Shown in WildDuck's list of passwords.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def app_password(ctx, inbox_id, description, as_json):
        """Issue an IMAP password for a person to open INBOX_ID's mailbox (shown once)."""
        from postern.cli import context

        postern = context.obtain_postern(ctx)
        if postern.config.role("receive").backend != "wildduck":
            raise click.ClickException("the receive backend is not 'wildduck': there is no IMAP mailbox")
        issued = context.run(ctx, lambda: issue_app_password(postern, inbox_id, description))
        if as_json:
            click.echo(json.dumps(issued, indent=2))
            return
        security = "TLS" if issued["imap_tls"] else "no TLS"
        click.echo(f"IMAP server: {issued['imap_host']}:{issued['imap_port']} ({security})")
        click.echo(f"Username:    {issued['username']}")
        click.echo(f"Password:    {issued['password']}   (shown only now)")
