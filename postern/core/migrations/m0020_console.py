"""The console: server-side sessions, one-time login links and the sign-in throttle
(docs/console.md). New tables only."""

import peewee

VERSION = 20


def upgrade(db: peewee.Database) -> None:
    class AdminToken(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "admin_token"

    class ConsoleSession(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=40)
        secret_hash = peewee.CharField(max_length=64, unique=True)
        admin_token = peewee.ForeignKeyField(AdminToken, on_delete="CASCADE")
        csrf_token = peewee.CharField(max_length=64)
        created_at = peewee.DateTimeField()
        last_seen_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        ended_at = peewee.DateTimeField(null=True)
        client_addr = peewee.CharField(max_length=64, null=True)

        class Meta:
            database = db
            table_name = "console_session"

    class ConsoleLink(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=40)
        code_hash = peewee.CharField(max_length=64, unique=True)
        admin_token = peewee.ForeignKeyField(AdminToken, on_delete="CASCADE")
        created_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        used_at = peewee.DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "console_link"

    class ConsoleLoginFailure(peewee.Model):
        client = peewee.CharField(max_length=64)
        window_start = peewee.DateTimeField()
        failures = peewee.IntegerField()

        class Meta:
            database = db
            table_name = "console_login_failure"
            primary_key = peewee.CompositeKey("client", "window_start")

    db.create_tables([ConsoleSession, ConsoleLink, ConsoleLoginFailure])
