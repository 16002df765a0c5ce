"""DNS: each tenant domain's DKIM key pair, and the last delegation check of a domain."""

import peewee

VERSION = 6


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class DkimKey(Base):
        domain = peewee.CharField(primary_key=True, max_length=253)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        selector = peewee.CharField(max_length=63)
        public_key = peewee.TextField()
        private_key_sealed = peewee.TextField()
        created_at = peewee.DateTimeField()

    class DomainCheck(Base):
        domain = peewee.CharField(primary_key=True, max_length=253)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        status = peewee.CharField(max_length=20)
        checks = peewee.TextField()
        checked_at = peewee.DateTimeField()

    db.create_tables([DkimKey, DomainCheck])
