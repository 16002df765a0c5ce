"""Threads, messages and attachments; the per-inbox message sequence."""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 3


def upgrade(db: peewee.Database) -> None:
    migrate(SchemaMigrator.from_database(db).add_column("inbox", "last_seq", peewee.BigIntegerField(default=0)))

    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class Thread(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        subject = peewee.CharField(max_length=998, default="")
        normalized_subject = peewee.CharField(max_length=998, default="", index=True)
        message_count = peewee.IntegerField(default=0)
        created_at = peewee.DateTimeField()
        last_message_at = peewee.DateTimeField()

    class Message(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
        thread = peewee.ForeignKeyField(Thread, on_delete="CASCADE")
        seq = peewee.BigIntegerField()
        direction = peewee.CharField(max_length=10)
        status = peewee.CharField(max_length=10)
        message_id_header = peewee.CharField(max_length=998, index=True)
        in_reply_to = peewee.CharField(max_length=998, null=True)
        references = peewee.TextField(default="")
        subject = peewee.CharField(max_length=998, default="")
        from_address = peewee.CharField(max_length=320, default="")
        from_name = peewee.CharField(max_length=200, default="")
        to_addresses = peewee.TextField(default="[]")
        cc_addresses = peewee.TextField(default="[]")
        reply_to = peewee.TextField(default="[]")
        envelope_from = peewee.CharField(max_length=320, default="")
        sent_at = peewee.DateTimeField(null=True)
        received_at = peewee.DateTimeField()
        text = peewee.TextField(default="")
        html = peewee.TextField(default="")
        snippet = peewee.CharField(max_length=200, default="")
        headers = peewee.TextField(default="[]")
        size = peewee.IntegerField()
        raw = peewee.BlobField()
        backend = peewee.CharField(max_length=40, null=True)
        backend_message_id = peewee.CharField(max_length=200, null=True)
        error = peewee.TextField(null=True)

        class Meta:
            indexes = ((("inbox", "seq"), True), (("thread", "seq"), False))

    class Attachment(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
        filename = peewee.CharField(max_length=255)
        content_type = peewee.CharField(max_length=255)
        content_id = peewee.CharField(max_length=998, null=True)
        inline = peewee.BooleanField(default=False)
        size = peewee.IntegerField()
        sha256 = peewee.CharField(max_length=64)
        data = peewee.BlobField()

    db.create_tables([Thread, Message, Attachment])
