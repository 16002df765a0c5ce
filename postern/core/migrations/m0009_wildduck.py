"""WildDuck receive backend: one row per inbox provisioned in WildDuck, holding its
user and folder ids and the ingest watermark (highest INBOX UID stored in Postern).

Touches no table but its own, so it is independent of whatever m0008 does.
"""

import peewee

VERSION = 9


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class WildDuckMailbox(Base):
        inbox = peewee.ForeignKeyField(Inbox, primary_key=True, on_delete="CASCADE")
        user_id = peewee.CharField(max_length=24, unique=True)
        inbox_mailbox = peewee.CharField(max_length=24)
        sent_mailbox = peewee.CharField(max_length=24, null=True)
        last_uid = peewee.BigIntegerField(default=0)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "wildduck_mailbox"

    db.create_tables([WildDuckMailbox])
