"""Rate-limit counters (docs/limits.md) on PostgreSQL: ``rate_counter`` holds one row
per limit, subject and fixed window. UNLOGGED: counters are not mail, a crash that
loses them only starts clients on a fresh window, and skipping the WAL keeps every
request's charge cheap. SQLite installs keep their counters in a file of their own
beside the database (postern/core/ratelimits/counters.py), so nothing is made there.
"""

import peewee

VERSION = 23


def upgrade(db: peewee.Database) -> None:
    if not isinstance(db, peewee.PostgresqlDatabase):
        return
    db.execute_sql(
        "CREATE UNLOGGED TABLE IF NOT EXISTS rate_counter ("
        "key TEXT NOT NULL, window_start BIGINT NOT NULL, hits INTEGER NOT NULL, "
        "PRIMARY KEY (key, window_start))"
    )
