"""The operator's kill switch for outbound mail (docs/limits.md, "Stopping sending"):
``sending_stop`` holds one row per stopped customer, enrollment key or agent (new table
only; nothing is stopped by the upgrade)."""

import peewee

VERSION = 25


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class SendingStop(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        kind = peewee.CharField(max_length=20)
        subject_id = peewee.CharField(max_length=40)
        reason = peewee.CharField(max_length=500, default="")
        created_at = peewee.DateTimeField()
        created_by = peewee.CharField(max_length=40)

        class Meta:
            indexes = ((("subject_id", "kind"), True),)

    db.create_tables([SendingStop])
