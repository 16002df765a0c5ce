"""A plugin used by the tests: a JSON route, a failing route, a service and a command.

Loaded by import path (``[plugins] modules = ["support.demo_plugin"]``) so real
``postern serve`` processes in the tests can use it too.
"""

import os
import time

import click

from postern.api import Route
from postern.api.bodies import read_json
from postern.core.hookspecs import hookimpl
from postern.core.services import Service


class EchoResource:
    OPENAPI = {"post": {"summary": "Echo a JSON object", "responses": {"200": {"description": "The same object"}}}}

    async def on_post(self, req, resp):
        resp.media = {"echo": await read_json(req, max_bytes=1024)}


class BoomResource:
    OPENAPI = {"get": {"summary": "Always fails", "responses": {"500": {"description": "Always"}}}}

    async def on_get(self, req, resp):
        raise RuntimeError("kaboom with pk_agent_abcdef0123456789 inside")


def run_sleeper(postern):
    """Writes its pid where the test can find it, then idles until killed."""
    pidfile = os.environ.get("POSTERN_DEMO_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    while True:
        time.sleep(1)


@hookimpl
def postern_routes(postern):
    return [Route("/v1/demo/echo", EchoResource()), Route("/v1/demo/boom", BoomResource())]


@hookimpl
def postern_services(postern):
    return [Service("demo-sleeper", run_sleeper, "idles; for supervision tests")]


@hookimpl
def postern_register_commands(cli):
    @cli.command(name="demo-hello")
    def demo_hello():
        """Say hello (added by the demo plugin)."""
        click.echo("hello from the demo plugin")
