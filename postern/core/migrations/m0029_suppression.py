"""The per-customer suppression list and one-click unsubscribe (docs/deliverability.md,
"Suppression list"):

- ``suppression``: one row per address a customer must not mail again (a hard bounce, a
  complaint, an unsubscribe, or an admin's entry), unique per customer and address;
- ``unsubscribe_token``: the SHA-256 of each RFC 8058 unsubscribe link's token, never the
  token itself.

New tables only; nothing is suppressed by the upgrade.
"""

import peewee

VERSION = 29


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Suppression(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the unique key's first column
        address = peewee.CharField(max_length=320)
        reason = peewee.CharField(max_length=20)
        detail = peewee.CharField(max_length=500, default="")
        message_id = peewee.CharField(max_length=40, null=True)
        created_at = peewee.DateTimeField()
        created_by = peewee.CharField(max_length=40)

        class Meta:
            indexes = ((("customer", "address"), True),)

    class UnsubscribeToken(Base):
        token_hash = peewee.CharField(primary_key=True, max_length=64)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        address = peewee.CharField(max_length=320)
        message_id = peewee.CharField(max_length=40, null=True)
        created_at = peewee.DateTimeField()

    db.create_tables([Suppression, UnsubscribeToken])
