"""The ``postern`` command: a click group that plugins can extend."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click
import peewee

import postern
from postern.core.config import ConfigError, load_config
from postern.core.db import DatabaseConfigError
from postern.core.errors import PosternError
from postern.core.filemodes import restrict_new_files, tighten_data_dir
from postern.core.logs import configure_logging
from postern.core.migrations import SchemaError
from postern.core.plugins import PluginError
from postern.core.registry import RegistryError, UnknownBackendError

# Domain errors the CLI reports as one clean line instead of a traceback.
CLEAN_ERRORS = (
    ConfigError,
    DatabaseConfigError,
    SchemaError,
    PluginError,
    RegistryError,
    UnknownBackendError,
    PosternError,
)

TEMPLATE = Path(__file__).parent / "postern.example.toml"
MISSING_MCP_EXTRA = "the MCP server needs the 'mcp' extra: pip install 'postern[mcp]'"


class PosternGroup(click.Group):
    """The one place that turns errors into the CLI's one-line ``Error:`` message."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CLEAN_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            # Unreachable server, missing database, refused login, unwritable file,
            # unmigrated schema: what to do, not a traceback through the driver.
            from postern.core.db import database
            from postern.core.dberrors import explain

            raise click.ClickException(explain(exc, database.obj)) from exc


def obtain_config(ctx: click.Context):
    """Load config once per invocation; errors become a one-line message."""
    if "config" not in ctx.obj:
        ctx.obj["config"] = load_config(ctx.obj["config_path"])
        configure_logging(ctx.obj["config"].log.level, ctx.obj["config"].log.format)
    return ctx.obj["config"]


def obtain_postern(ctx: click.Context):
    from postern.core.runtime import build_postern

    if "postern" not in ctx.obj:
        ctx.obj["postern"] = build_postern(obtain_config(ctx))
    return ctx.obj["postern"]


@click.group(cls=PosternGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="POSTERN_CONFIG",
    help="Config file (default: $POSTERN_CONFIG, else ./postern.toml if present, else embedded defaults).",
)
@click.pass_context
def cli(ctx, config_path):
    """Postern: email inboxes for AI agents."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.command()
def version():
    """Print Postern's version."""
    click.echo(f"postern {postern.__version__}")


@cli.command()
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
    config = obtain_config(ctx)
    p = obtain_postern(ctx)
    if only == "api":
        from postern.server import run_api

        run_api(config)
        return
    from postern.core.runtime import prepare_database
    from postern.supervisor import serve as supervise

    prepare_database(config)  # migrate once, before any child races to
    services = [service.name for service in p.services()]
    sys.exit(supervise(config, api=only != "services", services=services))


@cli.command()
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP (many agents) instead of stdio.")
@click.option("--bind", help="host:port for --http (mcp.bind, default 127.0.0.1:8810).")
@click.option("--api-url", help="The Postern REST API (POSTERN_API_BASE_URL; 'mock' runs offline).")
@click.pass_context
def mcp(ctx, over_http, bind, api_url):
    """Serve Postern's tools to an MCP host.

    stdio (the default) serves one agent, whose key comes from POSTERN_API_KEY or from
    the redeem_enrollment tool. --http serves many: each brings its own bearer key.
    POSTERN_MOCK=1 runs every tool offline on mock mode (postern.testing).
    """
    try:
        from postern.mcp import run
    except ImportError as exc:
        raise click.ClickException(f"{MISSING_MCP_EXTRA} ({exc})") from None
    from postern.core.config import api_base_url, split_host_port
    from postern.mcp.keys import AdminKeyRefused

    base_url = api_url or os.environ.get("POSTERN_API_BASE_URL") or None
    if not over_http:
        try:
            run.run_stdio(base_url=base_url)
        except AdminKeyRefused as exc:
            raise click.ClickException(str(exc)) from None
        return
    config = obtain_config(ctx)
    host, port = split_host_port("--bind" if bind else "mcp.bind", bind or config.mcp.bind)
    run.run_http(host=host, port=port, base_url=base_url or api_base_url(config))


@cli.group()
def service():
    """Inspect or run plugin services one at a time."""


@service.command("list")
@click.pass_context
def service_list(ctx):
    """List the services that `postern serve` would supervise."""
    for item in obtain_postern(ctx).services():
        click.echo(f"{item.name}\t{item.description}")


@service.command("run")
@click.argument("name")
@click.pass_context
def service_run(ctx, name):
    """Run one service in the foreground (what `postern serve` does in a child)."""
    from postern.core.ports import describe_bind_error
    from postern.core.services import notify_failed, notify_running

    try:
        p = obtain_postern(ctx)
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


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--force", is_flag=True, help="Overwrite an existing postern.toml.")
def init(directory, force):
    """Write a commented postern.toml into DIRECTORY and prepare its data directory."""
    from postern.core.runtime import prepare_database

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    config_file = target / "postern.toml"
    if config_file.exists() and not force:
        raise click.ClickException(f"{config_file} exists; use --force to overwrite it")
    config_file.write_text(TEMPLATE.read_text())
    config = load_config(config_file, environ={k: v for k, v in os.environ.items() if k != "POSTERN_CONFIG"})
    configure_logging(config.log.level, config.log.format)  # says which modes it tightened
    config.data_dir.mkdir(parents=True, exist_ok=True)
    version = prepare_database(config)
    click.echo(f"wrote {config_file}")
    click.echo(f"data directory {config.data_dir} ready (schema version {version})")
    click.echo(f"start with: postern --config {config_file} serve")


@cli.group()
def db():
    """Database schema commands."""


@db.command()
@click.pass_context
def upgrade(ctx):
    """Apply pending schema migrations."""
    from postern.core import migrations
    from postern.core.db import database, open_database

    config = obtain_config(ctx)
    tighten_data_dir(config)
    open_database(config.database_url, config.database.sqlite_synchronous)
    with database.connection_context():
        applied = migrations.upgrade()
        version = migrations.current_version()
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"schema at version {version}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """Installed plugins, their hooks, and the backend active for each role.

    A backend whose options are wrong is listed with its error, and the command
    then exits 1: the listing is what an operator needs to fix the config.
    """
    from postern.core.plugins import plugin_summaries
    from postern.core.runtime import build_postern

    p = build_postern(obtain_config(ctx), open_db=False, validate=False)
    problems = p.backend_problems()
    installed = plugin_summaries(p.pm)
    roles = [
        {
            "role": s.role,
            "backend": s.backend,
            "configured": s.explicit,
            "available": s.available,
            "plugin": s.plugin,
            "choices": p.registry.names(s.role),
            "error": problems.get(s.role),
        }
        for s in p.role_status()
    ]
    if as_json:
        click.echo(json.dumps({"plugins": installed, "roles": roles}, indent=2))
    else:
        _print_plugins(installed, roles)
    if problems:
        raise click.ClickException(
            f"{len(problems)} backend(s) cannot start ({', '.join(problems)}): `postern serve` would refuse to run"
        )


def _print_plugins(installed: list[dict], roles: list[dict]) -> None:
    click.echo("Installed plugins:")
    for row in installed:
        version = f" {row['version']}" if row["version"] else ""
        click.echo(f"  {row['name']}{version} ({row['module']}): {', '.join(row['hooks']) or 'no hooks'}")
    click.echo("Backends:")
    for row in roles:
        if row["error"]:
            status = f"CONFIG ERROR: {row['error']}"
        elif row["available"]:
            status = f"active (from {row['plugin']})"
        else:
            status = "NOT AVAILABLE: no installed plugin provides it yet"
        origin = "configured" if row["configured"] else "default"
        click.echo(f"  {row['role']:8} {row['backend']:12} {origin:10} {status}")


def _add_core_commands() -> None:
    from postern.cli_admin import admin
    from postern.cli_dns import dns

    admin.add_command(dns)
    cli.add_command(admin)


_add_core_commands()


def _add_plugin_commands() -> None:
    """Let plugins extend the CLI; a broken config must not hide `--help`."""
    from postern.core.plugins import get_plugin_manager

    try:
        config = load_config(_config_path_from_argv())
        pm = get_plugin_manager(disabled=config.plugins.disabled, modules=config.plugins.modules)
    except CLEAN_ERRORS:
        pm = get_plugin_manager()
    pm.hook.postern_register_commands(cli=cli)


def _config_path_from_argv() -> str | None:
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def main() -> None:
    # First of all, so every file of this process and of every child it starts (API
    # workers, services, forked listeners) is private: the data dir holds all the mail.
    restrict_new_files()
    try:
        _add_plugin_commands()
    except CLEAN_ERRORS as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli(prog_name="postern")
