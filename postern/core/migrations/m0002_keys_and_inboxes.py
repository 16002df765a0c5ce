"""Admin tokens, enrollment keys, agents, agent keys, inboxes and the audit log."""

import peewee

VERSION = 2


def upgrade(db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Customer(Base):
        id = peewee.CharField(primary_key=True, max_length=40)

    class AdminToken(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, null=True, on_delete="CASCADE")
        key_hash = peewee.CharField(max_length=64, unique=True)
        key_prefix = peewee.CharField(max_length=40)
        description = peewee.CharField(max_length=200, default="")
        created_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True)

    class EnrollmentKey(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        key_hash = peewee.CharField(max_length=64, unique=True)
        key_prefix = peewee.CharField(max_length=40)
        scopes = peewee.CharField(max_length=200)
        allowed_domains = peewee.TextField()
        max_mailboxes = peewee.IntegerField()
        mailboxes_used = peewee.IntegerField(default=0)
        max_redemptions = peewee.IntegerField(null=True)
        redemptions = peewee.IntegerField(default=0)
        description = peewee.CharField(max_length=200, default="")
        created_by = peewee.CharField(max_length=40)
        created_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True)

    class Agent(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        enrollment = peewee.ForeignKeyField(EnrollmentKey, on_delete="CASCADE")
        handle = peewee.CharField(max_length=64)
        created_at = peewee.DateTimeField()

        class Meta:
            indexes = ((("enrollment", "handle"), True),)

    class AgentKey(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        enrollment = peewee.ForeignKeyField(EnrollmentKey, on_delete="CASCADE")
        agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE")
        key_hash = peewee.CharField(max_length=64, unique=True)
        key_prefix = peewee.CharField(max_length=40)
        scopes = peewee.CharField(max_length=200)
        created_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True)

    class Inbox(Base):
        id = peewee.CharField(primary_key=True, max_length=40)
        customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
        enrollment = peewee.ForeignKeyField(EnrollmentKey, on_delete="CASCADE")
        agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE")
        address = peewee.CharField(max_length=320, unique=True)
        username = peewee.CharField(max_length=64)
        domain = peewee.CharField(max_length=253)
        display_name = peewee.CharField(max_length=200, default="")
        client_id = peewee.CharField(max_length=200, null=True)
        created_at = peewee.DateTimeField()

        class Meta:
            indexes = ((("enrollment", "client_id"), True), (("enrollment", "created_at"), False))

    class AuditEvent(Base):
        id = peewee.BigAutoField()
        at = peewee.DateTimeField(index=True)
        customer_id = peewee.CharField(max_length=40, null=True, index=True)
        enrollment_id = peewee.CharField(max_length=40, null=True)
        agent_id = peewee.CharField(max_length=40, null=True)
        token_id = peewee.CharField(max_length=40, null=True)
        key_prefix = peewee.CharField(max_length=40, null=True)
        actor = peewee.CharField(max_length=20)
        action = peewee.CharField(max_length=60)
        target = peewee.CharField(max_length=100, null=True)
        outcome = peewee.CharField(max_length=10)
        code = peewee.CharField(max_length=60, null=True)
        request_id = peewee.CharField(max_length=40, null=True)
        client_addr = peewee.CharField(max_length=64, null=True)

    # Customer exists since m0001; create only the new tables.
    db.create_tables([AdminToken, EnrollmentKey, Agent, AgentKey, Inbox, AuditEvent])
