"""Schema migrations: from empty, idempotent, concurrent-safe, and in step with models."""

import threading

import peewee
import pytest

from postern.core import migrations
from postern.core.db import database, open_database
from postern.core.models import ALL_MODELS, Customer


@pytest.fixture
def empty_db(db_url):
    open_database(db_url)
    database.connect(reuse_if_open=True)
    yield database.obj
    database.close()


def test_upgrade_from_empty(empty_db):
    assert migrations.current_version() == 0
    applied = migrations.upgrade()
    assert applied == [m.name for m in migrations.available()]
    assert migrations.current_version() == migrations.latest_version() >= 1
    assert migrations.upgrade() == []  # idempotent
    Customer.create(label="acme", name="Acme")
    assert Customer.get(Customer.label == "acme").id.startswith("cus_")


def test_migrated_schema_matches_models(db):
    """A model column without a migration (or the reverse) fails here."""
    for model in ALL_MODELS:
        table = model._meta.table_name
        in_db = {c.name for c in db.get_columns(table)}
        in_model = {f.column_name for f in model._meta.sorted_fields}
        assert in_db == in_model, f"{table}: migrations give {sorted(in_db)}, model has {sorted(in_model)}"


def test_unique_label_enforced(db):
    Customer.create(label="acme", name="Acme")
    with pytest.raises(peewee.IntegrityError):
        Customer.create(label="acme", name="Other")


def test_newer_schema_is_refused(db):
    migrations.SchemaMigration.create(
        version=migrations.latest_version() + 1,
        name="m9999_future",
        applied_at=Customer._meta.fields["created_at"].default(),
    )
    with pytest.raises(migrations.SchemaError, match="newer than this Postern knows"):
        migrations.check(auto_upgrade=True)


def test_behind_schema_refused_without_auto_upgrade(empty_db):
    with pytest.raises(migrations.SchemaError, match="run 'postern db upgrade'"):
        migrations.check(auto_upgrade=False)
    assert migrations.check(auto_upgrade=True) == migrations.latest_version()
    assert migrations.check(auto_upgrade=False) == migrations.latest_version()


def test_concurrent_upgrades_apply_each_migration_once(db_url):
    open_database(db_url)
    errors = []
    barrier = threading.Barrier(4)

    def worker():
        try:
            barrier.wait()
            with database.connection_context():
                migrations.upgrade()
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with database.connection_context():
        rows = list(migrations.SchemaMigration.select().order_by(migrations.SchemaMigration.version))
    assert [r.version for r in rows] == list(range(1, migrations.latest_version() + 1))
