"""Versioned schema migrations.

Each module ``mNNNN_<what>.py`` defines ``VERSION`` and ``upgrade(db)``; its DDL
uses frozen model classes or ``playhouse.migrate`` so it never depends on today's
models. Migrations run in order, each in its own transaction together with its row
in ``schema_migrations``, under a lock so concurrent starts cannot apply one twice.
A server refuses to run on a schema newer than it knows or, unless asked to
upgrade, older.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

import peewee

from postern.core.db import database
from postern.core.errors import SetupError


class SchemaError(SetupError):
    """The database schema does not match what this Postern knows."""


class SchemaMigration(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_at = peewee.DateTimeField()

    class Meta:
        database = database
        table_name = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    module: ModuleType


def available() -> list[Migration]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("m") and info.name[1:5].isdigit():
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(Migration(module.VERSION, info.name, module))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration versions must run 1..N without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(available())


def current_version() -> int:
    """The version the database is at; 0 for an empty database."""
    if not SchemaMigration.table_exists():
        return 0
    return SchemaMigration.select(peewee.fn.MAX(SchemaMigration.version)).scalar() or 0


def upgrade() -> list[str]:
    """Apply every pending migration; return the names applied."""
    applied = []
    db = database.obj
    with _locked_transaction(db):
        # Under the lock too: concurrent CREATE TABLE IF NOT EXISTS races on PostgreSQL.
        SchemaMigration.create_table(safe=True)
    for migration in available():
        with _locked_transaction(db):
            if SchemaMigration.get_or_none(SchemaMigration.version == migration.version):
                continue  # another process applied it while we waited for the lock
            migration.module.upgrade(db)
            SchemaMigration.create(
                version=migration.version,
                name=migration.name,
                applied_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            )
            applied.append(migration.name)
    return applied


def check(auto_upgrade: bool) -> int:
    """Make sure the schema is one this code knows; upgrade when allowed."""
    current, latest = current_version(), latest_version()
    if current > latest:
        raise SchemaError(
            f"database schema is at version {current}, newer than this Postern knows ({latest}): upgrade Postern"
        )
    if current < latest:
        if not auto_upgrade:
            raise SchemaError(
                f"database schema is at version {current}, this Postern needs {latest}: run 'postern db upgrade'"
            )
        upgrade()
    return latest


def _locked_transaction(db: peewee.Database):
    """A transaction that serialises migrators across processes and hosts."""
    if isinstance(db, peewee.PostgresqlDatabase):
        return _PgLocked(db)
    # BEGIN IMMEDIATE takes SQLite's write lock up front.
    return db.atomic("IMMEDIATE")


class _PgLocked:
    LOCK_KEY = 0x706F7374  # "post"

    def __init__(self, db):
        self.db = db
        self.tx = db.atomic()

    def __enter__(self):
        self.tx.__enter__()
        # Another process may be migrating: wait for it however long it takes, past
        # the lock_timeout that bounds every other lock wait (core/db.py).
        self.db.execute_sql("SET LOCAL lock_timeout = 0")
        self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (self.LOCK_KEY,))
        return self

    def __exit__(self, *exc):
        return self.tx.__exit__(*exc)
