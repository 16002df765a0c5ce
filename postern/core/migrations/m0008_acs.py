"""Outbound messages a send backend accepted and is still confirming (status ``sending``):
when it accepted them, for the backend's overall confirmation timeout."""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 8


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("message", "accepted_at", peewee.DateTimeField(null=True)))
