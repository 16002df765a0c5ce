"""Customers can be suspended by an operator: ``customer.suspended_at`` (null: active).

Adds one nullable column; existing customers stay active.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 21


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("customer", "suspended_at", peewee.DateTimeField(null=True)))
