"""WildDuck receive backend, second step: the watcher follows every folder a person may
move mail into (by receive time and a key per message, no longer by INBOX UID), and the
plugin keeps durable records of LMTP deliveries already made, Sent copies still due and
WildDuck users left behind by a rolled-back inbox.

Touches no table but the plugin's own.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 10


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Message(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class WildDuckSeen(Base):
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        key = peewee.CharField(max_length=64)
        received_at = peewee.DateTimeField()

        class Meta:
            table_name = "wildduck_seen"
            primary_key = peewee.CompositeKey("inbox", "key")
            indexes = ((("inbox", "received_at"), False),)

    class WildDuckDelivered(Base):
        digest = peewee.CharField(max_length=64)
        recipient = peewee.CharField(max_length=320)
        attempted_at = peewee.DateTimeField(index=True)
        delivered = peewee.BooleanField(default=False)

        class Meta:
            table_name = "wildduck_delivered"
            primary_key = peewee.CompositeKey("digest", "recipient")

    class WildDuckSentDue(Base):
        message = peewee.ForeignKeyField(Message, primary_key=True, on_delete="CASCADE")
        attempts = peewee.IntegerField(default=0)
        next_attempt_at = peewee.DateTimeField(index=True)

        class Meta:
            table_name = "wildduck_sent_due"

    class WildDuckOrphan(Base):
        user_id = peewee.CharField(primary_key=True, max_length=24)
        address = peewee.CharField(max_length=320)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "wildduck_orphan"

    db.create_tables([WildDuckSeen, WildDuckDelivered, WildDuckSentDue, WildDuckOrphan])
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("wildduck_mailbox", "ingest_from", peewee.DateTimeField(null=True)),
        migrator.add_column("wildduck_mailbox", "seen_until", peewee.DateTimeField(null=True)),
        migrator.drop_column("wildduck_mailbox", "last_uid"),
    )
