"""peewee models: the core's truth. Every table is created and changed by migrations."""

from __future__ import annotations

import datetime as dt

import peewee

from postern.core.db import database
from postern.core.ids import new_id


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Customer(BaseModel):
    """A tenant. ``label`` is DNS-safe and names the tenant's mail subdomain."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("cus"))
    label = peewee.CharField(max_length=63, unique=True)
    name = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField(default=utcnow)


class ServiceState(BaseModel):
    """What the supervisor on ``host`` last saw of one service, for /healthz."""

    host = peewee.CharField(max_length=255)
    name = peewee.CharField(max_length=100)
    state = peewee.CharField(max_length=20)  # starting, running, backoff, stopped, failed
    pid = peewee.IntegerField(null=True)
    restarts = peewee.IntegerField(default=0)
    last_exit = peewee.CharField(max_length=100, null=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("host", "name")


#: Every model, for the schema check that keeps migrations and models in step.
ALL_MODELS = (Customer, ServiceState)
