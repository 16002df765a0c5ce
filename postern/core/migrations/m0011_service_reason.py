"""Service states say why a service is not being served and when the next start is due
(``GET /healthz``: ``reason``, ``next_attempt_in``).

Touches only ``service_state``, which the supervisor rewrites on every change.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 11


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("service_state", "reason", peewee.CharField(max_length=200, null=True)),
        migrator.add_column("service_state", "next_attempt_at", peewee.DateTimeField(null=True)),
    )
