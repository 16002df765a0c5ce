"""Outbound mail: envelope recipients, retry state, and Idempotency-Key records."""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 4


def upgrade(db: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("message", "envelope_to", peewee.TextField(default="[]")),
        migrator.add_column("message", "attempts", peewee.IntegerField(default=0)),
        migrator.add_column("message", "next_attempt_at", peewee.DateTimeField(null=True)),
        migrator.add_column("message", "local_done", peewee.BooleanField(default=False)),
        migrator.add_index("message", ("next_attempt_at",), False),
    )

    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Message(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class IdempotencyRecord(Base):
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        key = peewee.CharField(max_length=200)
        request_hash = peewee.CharField(max_length=64)
        message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
        created_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("inbox", "key")

    db.create_tables([IdempotencyRecord])
