"""Sender verdicts at receive (``message.authentication``, JSON: SPF, DKIM, DMARC, ARC
and ``verified_sender``; '' when not checked), docs/trust.md "Sender verdicts".

Rows stored before this migration have '' and show no verdict.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 16


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("message", "authentication", peewee.TextField(default="")))
