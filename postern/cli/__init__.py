"""The ``postern`` command line (``postern.cli:main``, the console script).

- ``context``: what a command needs (config, ``Postern``, database, error conversion);
  the one module of this package that plugin commands import.
- ``app``: the root group, which loads the commands below when they run, and adds
  plugins' commands.
- ``serve``, ``install``, ``admin``, ``dns``, ...: the built-in commands.

Importing this package imports none of them (``postern.cli.serve`` in a service process
brings only what serving needs); ``cli`` and ``main`` load ``app`` when first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cli", "main"]


def main() -> None:
    from postern.cli.app import main as run

    run()


def __getattr__(name: str) -> Any:
    if name == "cli":
        from postern.cli.app import cli

        return cli
    raise AttributeError(f"module 'postern.cli' has no attribute {name!r}")
