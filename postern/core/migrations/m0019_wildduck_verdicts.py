"""WildDuck receive backend: the sender verdicts its SMTP front door made, one row per
message handed to WildDuck, named in the message's own Authentication-Results, so the
watcher stores each message with its verdict (docs/wildduck.md, "Sender verdicts").

Touches no table but the plugin's own.
"""

import peewee

VERSION = 19


def upgrade(db: peewee.Database) -> None:
    class WildDuckVerdict(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=40)
        authentication = peewee.TextField()
        tls = peewee.CharField(max_length=200, null=True)
        message_id = peewee.CharField(max_length=998, default="")
        from_address = peewee.CharField(max_length=320, default="")
        created_at = peewee.DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "wildduck_verdict"

    db.create_tables([WildDuckVerdict])
