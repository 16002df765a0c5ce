"""Inbound policy and quarantine (docs/trust.md, "Policy"): ``inbound_policy`` holds what a
customer, or one inbox, does with mail that fails DMARC under ``p=reject`` or is not
authenticated; ``quarantined_message`` holds the mail that policy held back.

Touches no table but its own.
"""

import peewee

VERSION = 17


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class InboundPolicy(Base):
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)
        scope = peewee.CharField(max_length=40, default="")
        dmarc_reject = peewee.CharField(max_length=20, null=True)
        unauthenticated = peewee.CharField(max_length=20, null=True)
        updated_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("customer", "scope")

    class QuarantinedMessage(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        reason = peewee.CharField(max_length=40)
        message_id = peewee.CharField(max_length=40)
        envelope_from = peewee.CharField(max_length=320, default="")
        from_address = peewee.CharField(max_length=320, default="")
        subject = peewee.CharField(max_length=998, default="")
        authentication = peewee.TextField(default="")
        tls = peewee.CharField(max_length=200, null=True)
        size = peewee.IntegerField()
        raw = peewee.BlobField()
        created_at = peewee.DateTimeField()

        class Meta:
            indexes = ((("customer", "created_at"), False),)

    db.create_tables([InboundPolicy, QuarantinedMessage])
