"""Delivery cursors: per agent and inbox, the ``seq`` of the last message a wait handed
to that agent, so a wait without ``after`` returns every message not yet given
(docs/mail.md, "Delivery cursors").

Touches no table but its own.
"""

import peewee

VERSION = 12


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Agent(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class DeliveryCursor(Base):
        agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE", index=False)  # the key's first column
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        delivered_seq = peewee.BigIntegerField(default=0)
        updated_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("agent", "inbox")

    db.create_tables([DeliveryCursor])
