"""The ``postern`` command line (``postern.cli:main``, the console script).

- ``context``: what a command needs (config, ``Postern``, database, error conversion);
  the one module of this package that plugin commands import.
- ``app``: the root group, which adds the commands below and plugins' commands.
- ``serve``, ``install``, ``admin``, ``dns``: the built-in commands.
"""

from postern.cli.app import cli, main

__all__ = ["cli", "main"]
