"""Message retention (docs/retention.md): ``retention_policy`` holds how many days a
customer's mail (``scope`` '') or one inbox's (``scope`` the inbox id) is kept; a null
``days`` keeps it forever, and no row inherits from the level above.

Also indexes ``download_link.object_id``: deleting a message deletes the links minted
for it and its attachments, found by that column.
"""

import peewee
from playhouse.migrate import SchemaMigrator, migrate

VERSION = 22


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class RetentionPolicy(Base):
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)
        scope = peewee.CharField(max_length=40, default="")
        days = peewee.IntegerField(null=True)
        updated_at = peewee.DateTimeField()

        class Meta:
            primary_key = peewee.CompositeKey("customer", "scope")

    db.create_tables([RetentionPolicy])
    migrate(SchemaMigrator.from_database(db).add_index("download_link", ("object_id",), False))
