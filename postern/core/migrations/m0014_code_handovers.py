"""Code hand-overs: which messages ``wait_for_code`` has handed to which agent, one row
each, so a message's code goes to an agent once (docs/mail.md, "Waiting for a code").

Touches no table but its own.
"""

import peewee

VERSION = 14


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Agent(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Message(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class CodeHandover(Base):
        agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE", index=False)  # the key's first column
        message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
        handed_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("agent", "message")

    db.create_tables([CodeHandover])
