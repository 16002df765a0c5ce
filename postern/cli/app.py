"""The ``postern`` command: the root click group, the built-in commands, and plugins'."""

from __future__ import annotations

import sys

import click

import postern
from postern.cli import (
    admin,
    approvals,
    backup,
    console,
    context,
    dns,
    doctor,
    install,
    queue,
    retention,
    sending,
    serve,
    trust,
    usage,
)
from postern.cli.suppression import suppression_cmd
from postern.core.config import load_config
from postern.core.errors import PosternError
from postern.core.filemodes import restrict_new_files


class PosternGroup(click.Group):
    """Every command, built-in or a plugin's, runs inside ``context.converted_errors``:
    an error the operator can act on is one ``Error:`` line and exit status 1."""

    def invoke(self, ctx):
        with context.converted_errors():
            return super().invoke(ctx)


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


for command in (serve.serve, serve.mcp, serve.service, install.init, install.db, install.plugins, admin.admin):
    cli.add_command(command)
backup.register(cli)  # backup, restore
cli.add_command(doctor.doctor)
admin.admin.add_command(dns.dns)
admin.admin.add_command(trust.quarantine)
admin.admin.add_command(trust.inbound_policy)
admin.admin.add_command(trust.rule)
admin.admin.add_command(retention.retention)
admin.admin.add_command(usage.usage_cmd)
admin.admin.add_command(sending.sending)
admin.admin.add_command(approvals.approvals)
admin.admin.add_command(queue.queue)
admin.admin.add_command(suppression_cmd)
admin.admin.add_command(console.console_link)


def _add_plugin_commands() -> None:
    """Let plugins extend the CLI; a broken config must not hide `--help`."""
    from postern.core.plugins import get_plugin_manager

    try:
        config = load_config(_config_path_from_argv())
        pm = get_plugin_manager(disabled=config.plugins.disabled, modules=config.plugins.modules)
    except PosternError:
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
    except PosternError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    cli(prog_name="postern")
