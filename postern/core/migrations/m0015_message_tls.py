"""The SMTP session's TLS version and cipher on each inbound message (``message.tls``,
e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"; NULL for plaintext), docs/trust.md.

Rows stored before this migration have NULL: whether they came over TLS is unknown.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 15


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("message", "tls", peewee.CharField(max_length=200, null=True)))
