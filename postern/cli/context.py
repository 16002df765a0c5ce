"""What a ``postern`` command needs, for the built-in commands and plugin commands alike.

This is the CLI's public module: a plugin's ``postern_register_commands`` imports it
(``from postern.cli import context``) and nothing else of ``postern.cli``.

- ``obtain_config(ctx)`` / ``obtain_postern(ctx)``: the configured ``Config`` and
  ``Postern``, loaded once per invocation.
- ``run(ctx, fn)``: open the database (checking its schema) and call ``fn`` inside a
  connection, with errors converted.
- ``click_error(exc)``: the one place that turns an error into the CLI's one-line
  ``Error:`` message (exit status 1); ``converted_errors()`` applies it to a block.
- ``emit``, ``json_option``, ``INFO``: the ``--json`` convention and the audit context
  of a command run by the local operator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
import peewee

from postern.core.errors import PosternError
from postern.core.principal import RequestInfo

T = TypeVar("T")

#: Who a command acts as in the audit log: the local operator at the command line.
INFO = RequestInfo(request_id=None, client_addr="cli")

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit(as_json: bool, data, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else the human-readable ``text``."""
    click.echo(json.dumps(data, indent=2) if as_json else text)


def click_error(exc: BaseException) -> click.ClickException | None:
    """The one-line message for an error the operator can act on; None for a bug.

    Every error Postern reports is a ``PosternError`` (postern/core/errors.py): a bad
    argument, a setup to fix, a backend that failed. A database the command cannot use
    is explained by what to do (postern/core/dberrors.py), not by the driver's traceback.
    """
    if isinstance(exc, PosternError):
        return click.ClickException(exc.message)
    if isinstance(exc, (peewee.DatabaseError, peewee.InterfaceError)):
        from postern.core.db import database
        from postern.core.dberrors import explain

        return click.ClickException(explain(exc, database.obj))
    return None


@contextmanager
def converted_errors() -> Iterator[None]:
    """Raise what ``click_error`` knows as a ``click.ClickException``; the rest unchanged."""
    try:
        yield
    except Exception as exc:
        converted = click_error(exc)
        if converted is None:
            raise
        raise converted from exc


def obtain_config(ctx: click.Context):
    """Load config once per invocation (and configure logging from it)."""
    from postern.core.config import load_config
    from postern.core.logs import configure_logging

    obj = ctx.find_root().ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
        config = obj["config"]
        configure_logging(config.log.level, config.log.format, log_config=config.log, data_dir=config.data_dir)
    return obj["config"]


def obtain_postern(ctx: click.Context):
    """The configured ``Postern`` (plugins, backends), built once per invocation."""
    from postern.core.runtime import build_postern

    obj = ctx.find_root().ensure_object(dict)
    if "postern" not in obj:
        obj["postern"] = build_postern(obtain_config(ctx))
    return obj["postern"]


def run(ctx: click.Context, fn: Callable[[], T]) -> T:
    """Open the database (checking its schema), then call ``fn`` in a connection."""
    from postern.core.db import database
    from postern.core.runtime import prepare_database

    with converted_errors():
        prepare_database(obtain_config(ctx))
        with database.connection_context():
            return fn()
