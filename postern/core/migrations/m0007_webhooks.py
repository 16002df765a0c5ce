"""Webhooks: endpoints, their deliveries, and the key that encrypts signing secrets.

Touches no table but its own (and one ``server_secret`` row), so it is independent
of whatever m0006 does.
"""

import secrets

import peewee

VERSION = 7


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class EnrollmentKey(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class ServerSecret(Base):
        name = peewee.CharField(primary_key=True, max_length=40)
        value = peewee.CharField(max_length=128)

    class Webhook(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        enrollment = peewee.ForeignKeyField(EnrollmentKey, on_delete="CASCADE")
        agent_id = peewee.CharField(max_length=40)
        url = peewee.TextField()
        event_types = peewee.TextField()
        inbox_ids = peewee.TextField(default="[]")
        description = peewee.CharField(max_length=200, default="")
        enabled = peewee.BooleanField(default=True)
        disabled_reason = peewee.CharField(max_length=500, null=True)
        secret = peewee.TextField()
        previous_secret = peewee.TextField(null=True)
        previous_secret_expires_at = peewee.DateTimeField(null=True)
        failed_deliveries = peewee.IntegerField(default=0)
        created_at = peewee.DateTimeField()
        updated_at = peewee.DateTimeField()

        class Meta:
            indexes = ((("enrollment", "created_at"), False),)

    class WebhookDelivery(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        webhook = peewee.ForeignKeyField(Webhook, on_delete="CASCADE")
        event_id = peewee.CharField(max_length=40)
        event_type = peewee.CharField(max_length=40)
        payload = peewee.TextField()
        status = peewee.CharField(max_length=10)
        attempts = peewee.IntegerField(default=0)
        next_attempt_at = peewee.DateTimeField(null=True)
        lease = peewee.CharField(max_length=40, null=True)
        last_attempt_at = peewee.DateTimeField(null=True)
        last_status_code = peewee.IntegerField(null=True)
        last_error = peewee.TextField(null=True)
        last_response = peewee.TextField(null=True)
        created_at = peewee.DateTimeField()
        delivered_at = peewee.DateTimeField(null=True)

        class Meta:
            indexes = ((("status", "next_attempt_at"), False), (("webhook", "created_at"), False))

    db.create_tables([Webhook, WebhookDelivery])
    # The key that encrypts webhook signing secrets at rest, shared by every process and host.
    ServerSecret.create(name="webhook_secrets", value=secrets.token_hex(32))
