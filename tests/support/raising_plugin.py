"""A plugin that raises one error of each branch of postern/core/errors.py, from an API
route (``GET /v1/raise/{kind}``) and from a command (``postern raise-error KIND``), the
way a plugin would: tests/test_error_tree.py checks what callers and operators see."""

import click

from postern.api import Route
from postern.core.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    NotFound,
    PermanentFailure,
    TemporaryFailure,
)
from postern.core.hookspecs import hookimpl
from postern.core.plugins import PluginError

ERRORS = {
    "not-found": lambda: NotFound("no inbox 'inb_missing'"),
    "invalid": lambda: InvalidInput("limit must be between 1 and 100", field="limit"),
    "config": lambda: ConfigError("[send.acme]: api_key is required (secret-setting-name)"),
    "plugin": lambda: PluginError("plugin 'acme' implements postern_routez, which is no hook"),
    "temporary": lambda: TemporaryFailure("acme answered 503", retry_after=7, code="acme_busy"),
    "permanent": lambda: PermanentFailure("acme refused the sender", code="acme_refused"),
    "no-backend": lambda: BackendUnavailable("no dns backend: the default 'dns_builtin' is not installed"),
}


class RaiseResource:
    OPENAPI = {"get": {"summary": "Raise an error of one kind", "responses": {"400": {"description": "Always"}}}}

    async def on_get(self, req, resp, kind):
        raise ERRORS[kind]()


@hookimpl
def postern_routes(postern):
    return [Route("/v1/raise/{kind}", RaiseResource())]


@hookimpl
def postern_register_commands(cli):
    from postern.cli import context

    @cli.command(name="raise-error")
    @click.argument("kind", type=click.Choice(sorted(ERRORS)))
    @click.option("--in-database", is_flag=True, help="Raise it inside context.run.")
    @click.pass_context
    def raise_error(ctx, kind, in_database):
        """Raise one error (for the tests)."""
        if in_database:
            context.run(ctx, lambda: (_ for _ in ()).throw(ERRORS[kind]()))
        raise ERRORS[kind]()
