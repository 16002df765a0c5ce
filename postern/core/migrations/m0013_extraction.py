"""Codes and links found in each inbound message at ingest (``message.extraction``,
JSON; '' when nothing was found), so listings and waiters read them without bodies.

Rows stored before this migration have '' and show no codes or links.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 13


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("message", "extraction", peewee.TextField(default="")))
