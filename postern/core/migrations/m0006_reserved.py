"""Reserved for issue 5 (DNS), whose branch adds its own m0006: at merge that file
replaces this one. Nothing to do here; it only keeps the versions gapless."""

import peewee

VERSION = 6


def upgrade(db: peewee.Database) -> None:
    return None
