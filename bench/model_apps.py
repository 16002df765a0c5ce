"""Throwaway apps for bench/serve_models.py: one pair of endpoints, two serving models.

``asgi_app`` is shaped like Postern's API (falcon ASGI, database work through
``postern.core.db.DatabaseRunner``); ``wsgi_app`` is the same endpoints as plain
falcon WSGI, querying directly on the worker thread. Both open the database with
Postern's own ``open_database`` so the SQLite pragmas (WAL, busy timeout) match.

gunicorn imports this module in each worker after fork (no ``--preload``), so no
connection crosses a fork; the database path comes from ``$BENCH_DB``.
"""

from __future__ import annotations

import os
import random

import falcon
import falcon.asgi
import peewee

from postern.api.middleware import Lifespan
from postern.core.db import DatabaseRunner, database, open_database

ROWS = 1000


class Item(peewee.Model):
    name = peewee.CharField()

    class Meta:
        database = database  # Postern's proxy, so DatabaseRunner finds the connection


def seed(path: str) -> None:
    """Create the WAL database with ROWS rows (run once by the bench, before any server)."""
    db = open_database(f"sqlite:///{path}")
    with db:
        db.create_tables([Item])
        Item.insert_many([{"name": f"item-{i}"} for i in range(ROWS)]).execute()


def lookup() -> dict:
    """One primary-key SELECT; a random key so it is not the same page every time."""
    row = Item.get_by_id(random.randint(1, ROWS))
    return {"id": row.id, "name": row.name}


# ---- ASGI: Postern's model -------------------------------------------------


class AsyncPing:
    async def on_get(self, req, resp):
        resp.media = {"ok": True}


class AsyncDb:
    def __init__(self, runner: DatabaseRunner):
        self.runner = runner

    async def on_get(self, req, resp):
        resp.media = await self.runner.run(lookup)


# ---- WSGI: the same endpoints, blocking -------------------------------------


class SyncPing:
    def on_get(self, req, resp):
        resp.media = {"ok": True}


class SyncDb:
    def on_get(self, req, resp):
        # peewee's SqliteDatabase keeps one connection per thread: open it on the
        # thread's first request and keep it, as DatabaseRunner's pool threads do.
        database.obj.connect(reuse_if_open=True)
        resp.media = lookup()


if os.environ.get("BENCH_DB"):
    open_database(f"sqlite:///{os.environ['BENCH_DB']}")


class _NoWaiters:
    """Stands in for Postern's doorbell in ``Lifespan``: these apps have no waiters."""

    def close(self) -> None:
        pass


# Same pool size as Postern's default (database.threads = 8).
_runner = DatabaseRunner(int(os.environ.get("BENCH_DB_THREADS", "8")))
asgi_app = falcon.asgi.App(middleware=[Lifespan(_runner, _NoWaiters())])
asgi_app.add_route("/ping", AsyncPing())
asgi_app.add_route("/db", AsyncDb(_runner))

wsgi_app = falcon.App()
wsgi_app.add_route("/ping", SyncPing())
wsgi_app.add_route("/db", SyncDb())
