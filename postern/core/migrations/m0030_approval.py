"""Human approval of outbound mail (docs/mail.md, "Human approval"): an enrollment key
or an inbox can require it (``require_approval``, false for every existing row), and a
held message keeps the reviewer's note, who decided and when, and when it expires.

``message.status`` grows to 20 characters (``pending_approval`` is 16): PostgreSQL
enforces a varchar's length, SQLite does not, so only PostgreSQL's column changes.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 30


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("enrollment_key", "require_approval", peewee.BooleanField(default=False)),
        migrator.add_column("inbox", "require_approval", peewee.BooleanField(default=False)),
        migrator.add_column("message", "review_note", peewee.TextField(null=True)),
        migrator.add_column("message", "reviewed_by", peewee.CharField(max_length=40, null=True)),
        migrator.add_column("message", "reviewed_at", peewee.DateTimeField(null=True)),
        migrator.add_column("message", "approval_expires_at", peewee.DateTimeField(null=True)),
        # Set only while a message is pending: the outbox's expiry sweep and the
        # reviewers' queue read this small index, never the whole message table.
        migrator.add_index("message", ("approval_expires_at",), False),
    )
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql('ALTER TABLE "message" ALTER COLUMN "status" TYPE VARCHAR(20)')
