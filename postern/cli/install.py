"""Setting Postern up and checking it: ``postern init``, ``db upgrade``, ``plugins``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from postern.cli import context
from postern.core.backends import ROLES
from postern.core.config import load_config
from postern.core.filemodes import tighten_data_dir
from postern.core.logs import configure_logging

TEMPLATE = Path(__file__).parent.parent / "postern.example.toml"


@click.command()
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


@click.group()
def db():
    """Database schema commands."""


@db.command()
@click.option("--dry-run", is_flag=True, help="List the migrations that would run; change nothing.")
@click.pass_context
def upgrade(ctx, dry_run):
    """Apply pending schema migrations (with --dry-run: list them)."""
    from postern.core import migrations
    from postern.core.db import database, open_database

    config = context.obtain_config(ctx)
    if dry_run:
        _upgrade_dry_run(config)
        return
    tighten_data_dir(config)
    open_database(config.database_url, config.database.sqlite_synchronous)
    with database.connection_context():
        applied = migrations.upgrade()
        version = migrations.current_version()
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"schema at version {version}")


def _upgrade_dry_run(config) -> None:
    """What ``db upgrade`` would apply: nothing is created, migrated or chmodded."""
    from postern.core import migrations
    from postern.core.backup import pending_migrations, sqlite_path
    from postern.core.db import database, open_database

    path = sqlite_path(config.database_url)
    if path is not None and not path.exists():
        current = 0  # opening it would create it
        click.echo(f"no database at {path} yet")
    else:
        open_database(config.database_url, config.database.sqlite_synchronous)
        with database.connection_context():
            current = migrations.current_version()
    latest = migrations.latest_version()
    if current > latest:
        raise migrations.SchemaError(
            f"database schema is at version {current}, newer than this Postern knows ({latest}): upgrade Postern"
        )
    pending = pending_migrations(current)
    click.echo(f"schema at version {current}; this Postern is at {latest}")
    if not pending:
        click.echo("nothing to apply")
        return
    click.echo(f"{len(pending)} migration(s) would run (dry run: nothing applied):")
    for migration in pending:
        click.echo(f"  {migration.version:4d} {migration.name}: {migration.summary}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """Installed plugins, their hooks, and the backend active for each role (with
    each backend's one-line description).

    A backend whose options are wrong is listed with its error, and the command
    then exits 1: the listing is what an operator needs to fix the config.
    """
    from postern.core.plugins import plugin_summaries
    from postern.core.runtime import build_postern

    p = build_postern(context.obtain_config(ctx), open_db=False, validate=False)
    problems = p.backend_problems()
    installed = plugin_summaries(p.pm)
    roles = [
        {
            "role": s.role,
            "backend": s.backend,
            "configured": s.explicit,
            "available": s.available,
            "plugin": s.plugin,
            "description": p.registry.get(s.role, s.backend).factory.description if s.available else None,
            "choices": p.registry.names(s.role),
            "error": problems.get(s.role),
        }
        for s in p.role_status()
    ]
    from postern.core.mail.outcome import outbound_mode

    outbound = outbound_mode(p).as_json()
    if as_json:
        backends = [_backend_json(p.registry.get(role, name)) for role in ROLES for name in p.registry.names(role)]
        body = {"plugins": installed, "roles": roles, "backends": backends, "outbound": outbound}
        click.echo(json.dumps(body, indent=2))
    else:
        _print_plugins(installed, roles)
        click.echo(f"Outbound: {outbound['mode'].upper()}: {outbound['detail']}")
    if problems:
        raise click.ClickException(
            f"{len(problems)} backend(s) cannot start ({', '.join(problems)}): `postern serve` would refuse to run"
        )


def _backend_json(registration) -> dict:
    return {
        "role": registration.role,
        "name": registration.name,
        "plugin": registration.plugin,
        "description": registration.factory.description,
    }


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
        if row["description"]:
            click.echo(f"  {'':8} {row['description']}")
