"""``postern admin console-link``: a one-time sign-in link for the console."""

from __future__ import annotations

from urllib.parse import quote

import click

from postern.cli.context import INFO, emit, json_option, obtain_config, run
from postern.core import consolesessions, tenancy
from postern.core.principal import CLI


def console_base(config) -> str:
    """Where a browser reaches this server: ``server.public_url``, else its bind address."""
    if config.server.public_url:
        return config.server.public_url.rstrip("/")
    host, _, port = config.server.bind.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 (reading a bind address, not binding)
        host = "127.0.0.1"
    return f"http://{host}:{port}"


@click.command("console-link")
@click.option("--customer", "customer_ref", help="Sign in as an org admin of this customer (id or label).")
@json_option
@click.pass_context
def console_link(ctx, customer_ref, as_json):
    """Print a one-time link that signs a browser in to the console.

    Without --customer it signs in as an operator. The link works once, within
    [console] link_minutes; the session it opens acts as an admin token minted for it
    (described "console link"), which `postern admin token revoke` ends."""
    config = obtain_config(ctx)
    lifetimes = consolesessions.Lifetimes.from_config(config.console)

    def mint():
        customer = tenancy.get_customer(CLI, customer_ref) if customer_ref else None
        return consolesessions.create_login_link(INFO, customer, lifetimes)

    link, code = run(ctx, mint)
    url = f"{console_base(config)}/console/link?code={quote(code)}"
    data = {"url": url, "expires_at": link.expires_at.isoformat() + "Z", "admin_token_id": link.admin_token_id}
    emit(as_json, data, f"{url}\n(valid once, until {data['expires_at']})")
