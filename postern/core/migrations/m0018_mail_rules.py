"""Allow and block lists (docs/trust.md, "Allow and block lists"): ``mail_rule`` holds
each entry, for receiving (matched on the authenticated sender) or sending (matched on
each recipient), at customer, enrollment-key or inbox level.

Touches no table but its own.
"""

import peewee

VERSION = 18


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class EnrollmentKey(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class MailRule(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        enrollment = peewee.ForeignKeyField(EnrollmentKey, null=True, on_delete="CASCADE")
        inbox = peewee.ForeignKeyField(Inbox, null=True, on_delete="CASCADE")
        direction = peewee.CharField(max_length=10)
        action = peewee.CharField(max_length=10)
        pattern = peewee.CharField(max_length=320)
        description = peewee.CharField(max_length=200, default="")
        created_at = peewee.DateTimeField()

        class Meta:
            indexes = ((("customer", "direction"), False),)

    db.create_tables([MailRule])
