"""``postern serve``, ``postern service …`` and ``postern mcp``: running Postern."""

from __future__ import annotations

import logging
import os
import sys

import click

from postern.cli import context

MISSING_MCP_EXTRA = "the MCP server needs the 'mcp' extra: pip install 'postern[mcp]'"


@click.command()
@click.option("--only", type=click.Choice(["api", "services"]), help="Run only the API or only the services.")
@click.option("--bind", help="Address for the API, e.g. 127.0.0.1:8800 (server.bind).")
@click.option("--workers", type=int, help="API worker processes (server.workers).")
@click.pass_context
def serve(ctx, only, bind, workers):
    """Run Postern: the API under gunicorn and every active plugin's services."""
    # Flags travel as environment overrides so supervised children see them too.
    if bind:
        os.environ["POSTERN_SERVER_BIND"] = bind
    if workers:
        os.environ["POSTERN_SERVER_WORKERS"] = str(workers)
    config = context.obtain_config(ctx)
    from postern.server import share_metrics

    share_metrics(config)  # before the plugins load: children and workers inherit it
    p = context.obtain_postern(ctx)
    if only == "api":
        from postern.server import run_api

        run_api(config)
        return
    from postern.core.runtime import prepare_database
    from postern.supervisor import serve as supervise

    prepare_database(config)  # migrate once, before any child races to
    services = [service.name for service in p.services()]
    sys.exit(supervise(config, api=only != "services", services=services))


@click.command()
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP (many agents) instead of stdio.")
@click.option("--bind", help="host:port for --http (mcp.bind, default 127.0.0.1:8810).")
@click.option("--api-url", help="The Postern REST API (POSTERN_API_BASE_URL; 'mock' runs offline).")
@click.pass_context
def mcp(ctx, over_http, bind, api_url):
    """Serve Postern's tools to an MCP host.

    stdio (the default) serves one agent, whose key comes from POSTERN_ENROLLMENT_KEY with
    POSTERN_AGENT_HANDLE (renewed before it expires), POSTERN_API_KEY, or the
    redeem_enrollment tool. --http serves many: each brings its own bearer key.
    POSTERN_MOCK=1 runs every tool offline on mock mode (postern.testing).
    """
    try:
        from postern.mcp import run
    except ImportError as exc:
        raise click.ClickException(f"{MISSING_MCP_EXTRA} ({exc})") from None
    from postern.core.config import api_base_url, split_host_port
    from postern.mcp.keys import AdminKeyRefused, IncompleteCredential

    base_url = api_url or os.environ.get("POSTERN_API_BASE_URL") or None
    if not over_http:
        try:
            run.run_stdio(base_url=base_url)
        except (AdminKeyRefused, IncompleteCredential) as exc:
            raise click.ClickException(str(exc)) from None
        return
    config = context.obtain_config(ctx)
    host, port = split_host_port("--bind" if bind else "mcp.bind", bind or config.mcp.bind)
    run.run_http(
        host=host,
        port=port,
        base_url=base_url or api_base_url(config),
        trusted_proxies=config.server.trusted_proxies,
    )


@click.group()
def service():
    """Inspect or run plugin services one at a time."""


@service.command("list")
@click.pass_context
def service_list(ctx):
    """List the services that `postern serve` would supervise."""
    for item in context.obtain_postern(ctx).services():
        click.echo(f"{item.name}\t{item.description}")


@service.command("run")
@click.argument("name")
@click.pass_context
def service_run(ctx, name):
    """Run one service in the foreground (what `postern serve` does in a child)."""
    from postern.core.ports import describe_bind_error
    from postern.core.services import notify_failed, notify_running

    try:
        p = context.obtain_postern(ctx)
        found = {item.name: item for item in p.services()}
        if name not in found:
            raise click.ClickException(f"no service named '{name}'; services: {', '.join(sorted(found)) or 'none'}")
        if not found[name].notifies_ready:
            notify_running()
        found[name].run(p)
    except BaseException as exc:
        # The supervisor shows this reason in /healthz; SIGTERM's stop is no failure.
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)) or getattr(exc, "code", 0):
            reason = describe_bind_error(exc)
            logging.getLogger("postern.service").error("service %s failed: %s", name, reason)
            notify_failed(reason)
        raise
