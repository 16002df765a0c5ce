"""``postern backup DIR`` and ``postern restore DIR``: the operator's side of
``postern.core.backup`` (docs/backups.md)."""

from __future__ import annotations

import click

from postern.cli import context


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.pass_context
def backup(ctx, directory):
    """Back the database and its secrets up into DIRECTORY (new or empty), while Postern serves.

    SQLite is copied with SQLite's online backup API, PostgreSQL with pg_dump (custom
    format; needs postgresql-client). DIRECTORY/secrets holds the key that decrypts the
    DKIM private keys: keep the backup as safely as the database.
    """
    from postern.core.backup import create_backup

    result = create_backup(context.obtain_config(ctx), directory)
    manifest = result.manifest
    click.echo(
        f"backed up the {manifest['database']} database (schema version {manifest['schema_version']}) "
        f"into {result.directory}"
    )
    for entry in manifest["files"]:
        click.echo(f"  {entry['path']}  {entry['bytes']} bytes  sha256 {entry['sha256']}")
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"{result.directory}/secrets decrypts the DKIM keys: keep this backup as safely as the database")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing database (and secrets) with the backup.")
@click.pass_context
def restore(ctx, directory, force):
    """Restore the backup in DIRECTORY as the configured database and secrets.

    Stop Postern first. Every file is checked against manifest.json; a backup newer
    than this Postern, or an existing database (without --force), is refused. The
    restored database is left at the backup's schema: migrations are not run, `postern
    db upgrade --dry-run` lists them and `postern db upgrade` applies them.
    """
    from postern.core.backup import restore_backup
    from postern.core.filemodes import tighten_data_dir

    config = context.obtain_config(ctx)
    result = restore_backup(config, directory, force=force)
    tighten_data_dir(config)
    manifest = result.manifest
    click.echo(
        f"restored the backup of {manifest['created_at']} (Postern {manifest['postern_version']}) "
        f"into {result.database}"
    )
    for path in result.secrets:
        click.echo(f"  secret {path}")
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if result.pending:
        click.echo(
            f"the schema is at version {manifest['schema_version']}; this Postern needs "
            f"{result.pending[-1].version}. {len(result.pending)} migration(s) pending:"
        )
        for migration in result.pending:
            click.echo(f"  {migration.version:4d} {migration.name}: {migration.summary}")
        click.echo("apply them with: postern db upgrade (preview: postern db upgrade --dry-run)")
    else:
        click.echo(f"schema at version {manifest['schema_version']}: nothing to upgrade")
