"""The usage ledger (docs/usage.md): ``usage_event``, one row per metered action (an
inbox made, a message sent, a message received) under a unique ``ref``, and
``usage_calls``, API calls counted per hour, customer, enrollment, agent and route class.

Both start empty: actions before this migration are not counted. Bytes stored is read
from the message rows when asked, so it covers all mail from the start.
"""

import peewee

VERSION = 24


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class UsageEvent(Base):
        id = peewee.BigAutoField()
        ref = peewee.CharField(max_length=100, unique=True)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)
        enrollment_id = peewee.CharField(max_length=40)
        agent_id = peewee.CharField(max_length=40)
        kind = peewee.CharField(max_length=20)
        at = peewee.DateTimeField()
        quantity = peewee.IntegerField(default=1)
        bytes = peewee.BigIntegerField(default=0)

        class Meta:
            indexes = ((("customer", "at"), False),)

    class UsageCalls(Base):
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)
        hour = peewee.DateTimeField()
        enrollment_id = peewee.CharField(max_length=40, default="")
        agent_id = peewee.CharField(max_length=40, default="")
        route_class = peewee.CharField(max_length=10)
        calls = peewee.BigIntegerField(default=0)

        class Meta:
            primary_key = peewee.CompositeKey("customer", "hour", "enrollment_id", "agent_id", "route_class")

    db.create_tables([UsageEvent, UsageCalls])
