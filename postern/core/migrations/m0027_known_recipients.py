"""A fresh domain's ramp of new recipients (docs/limits.md, "Sending limits"):
``known_recipient`` holds the SHA-256 of each address a customer has sent to while one
of its domains ramps up (new table only; nothing is known before the upgrade, so every
recipient counts as new on a domain still in its first days)."""

import peewee

VERSION = 27


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class KnownRecipient(Base):
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)
        address_hash = peewee.CharField(max_length=64)
        first_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("customer", "address_hash")

    db.create_tables([KnownRecipient])
