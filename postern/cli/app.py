"""The ``postern`` command: the root click group, the built-in commands, and plugins'."""

from __future__ import annotations

import importlib
import sys

import click

import postern
from postern.cli import context
from postern.core.config import load_config
from postern.core.errors import PosternError
from postern.core.filemodes import restrict_new_files

#: The built-in commands, each imported when it runs (or ``--help`` lists it): every
#: service, the supervisor and each API master is a ``postern`` process, and importing
#: every command's modules (the admin commands reach most of the core) costs ~19 MiB of
#: RSS over importing ``postern.cli.serve`` alone.
BUILTIN = {
    "admin": "postern.cli.app:admin_group",
    "backup": "postern.cli.backup:backup",
    "db": "postern.cli.install:db",
    "doctor": "postern.cli.doctor:doctor",
    "init": "postern.cli.install:init",
    "mcp": "postern.cli.serve:mcp",
    "plugins": "postern.cli.install:plugins",
    "restore": "postern.cli.backup:restore",
    "serve": "postern.cli.serve:serve",
    "service": "postern.cli.serve:service",
}

#: ``postern admin``'s commands that live in their own modules (admin.py has the rest).
ADMIN_EXTRA = (
    "postern.cli.dns:dns",
    "postern.cli.trust:quarantine",
    "postern.cli.trust:inbound_policy",
    "postern.cli.trust:rule",
    "postern.cli.retention:retention",
    "postern.cli.usage:usage_cmd",
    "postern.cli.sending:sending",
    "postern.cli.approvals:approvals",
    "postern.cli.queue:queue",
    "postern.cli.suppression:suppression_cmd",
    "postern.cli.console:console_link",
)


def _load(target: str) -> click.Command:
    """The command ``module:name`` names, or the one the function it names builds."""
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name)
    return found if isinstance(found, click.Command) else found()


def admin_group() -> click.Group:
    from postern.cli.admin import admin

    for target in ADMIN_EXTRA:
        admin.add_command(_load(target))  # again on a second call: the same name, the same command
    return admin


class PosternGroup(click.Group):
    """Every command, built-in or a plugin's, runs inside ``context.converted_errors``:
    an error the operator can act on is one ``Error:`` line and exit status 1. Built-in
    commands load on first use (``BUILTIN``); a plugin's command of the same name wins,
    as it did when it was added after them."""

    def invoke(self, ctx):
        with context.converted_errors():
            return super().invoke(ctx)

    def list_commands(self, ctx):
        return sorted({*self.commands, *BUILTIN})

    def get_command(self, ctx, name):
        if name not in self.commands and name in BUILTIN:
            self.add_command(_load(BUILTIN[name]), name)
        return self.commands.get(name)


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
