"""x402 payments (docs/billing.md): one row per payment Postern settled, keyed by the
payment's EIP-3009 nonce (with its network, token and payer), so a payment can pay for
one action only, and a retry whose action failed after settlement reuses it."""

import peewee

VERSION = 26


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class X402Payment(Base):
        key = peewee.CharField(primary_key=True, max_length=250)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        action = peewee.CharField(max_length=20)
        amount = peewee.CharField(max_length=80)
        payer = peewee.CharField(max_length=42)
        state = peewee.CharField(max_length=10)
        used = peewee.BooleanField(default=False)
        transaction = peewee.CharField(max_length=100, default="")
        response = peewee.TextField(default="")
        created_at = peewee.DateTimeField()

    db.create_tables([X402Payment])
