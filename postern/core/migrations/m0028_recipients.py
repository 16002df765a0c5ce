"""Outbound mail gets a status per recipient, and attempts a visible claim
(docs/mail.md, "Outbound queue"):

- ``message_recipient``: one row per envelope recipient of an outbound message, so one
  message to several domains can partly succeed, be retried only where it was
  deferred, and bounce or draw a complaint per recipient. Messages sent before this
  upgrade have no rows; they are read as "every recipient as the message".
- ``message.claimed_until``: while a delivery attempt owns a message (the lease), so
  ``postern admin queue retry|cancel`` leave alone a message that may be under way.
- ``message.bulk``: bulk mail, sent one copy per outside recipient with its own
  one-click ``List-Unsubscribe`` link (RFC 8058).
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 28


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Message(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class MessageRecipient(Base):
        message = peewee.ForeignKeyField(Message, on_delete="CASCADE", index=False)  # the key's first column
        address = peewee.CharField(max_length=320)
        status = peewee.CharField(max_length=20)
        code = peewee.CharField(max_length=60, default="")
        detail = peewee.CharField(max_length=1000, default="")
        attempts = peewee.IntegerField(default=0)
        updated_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("message", "address")

    db.create_tables([MessageRecipient])
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("message", "claimed_until", peewee.DateTimeField(null=True)),
        migrator.add_column("message", "bulk", peewee.BooleanField(default=False)),
    )
