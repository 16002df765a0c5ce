"""Customers (tenants) and the supervisor's service states."""

import peewee

VERSION = 1


def upgrade(db: peewee.Database) -> None:
    class Customer(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=40)
        label = peewee.CharField(max_length=63, unique=True)
        name = peewee.CharField(max_length=200)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "customer"

    class ServiceState(peewee.Model):
        host = peewee.CharField(max_length=255)
        name = peewee.CharField(max_length=100)
        state = peewee.CharField(max_length=20)
        pid = peewee.IntegerField(null=True)
        restarts = peewee.IntegerField(default=0)
        last_exit = peewee.CharField(max_length=100, null=True)
        updated_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "service_state"
            primary_key = peewee.CompositeKey("host", "name")

    db.create_tables([Customer, ServiceState])
