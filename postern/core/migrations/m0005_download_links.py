"""Signed download links, and the server secret that signs them."""

import secrets

import peewee

VERSION = 5


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class ServerSecret(Base):
        name = peewee.CharField(primary_key=True, max_length=40)
        value = peewee.CharField(max_length=128)

    class DownloadLink(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        kind = peewee.CharField(max_length=10)
        object_id = peewee.CharField(max_length=40)
        expires_at = peewee.DateTimeField()
        used_at = peewee.DateTimeField(null=True)
        created_at = peewee.DateTimeField()

    db.create_tables([ServerSecret, DownloadLink])
    # One key for every process and host sharing this database.
    ServerSecret.create(name="download_links", value=secrets.token_hex(32))
