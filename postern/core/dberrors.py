"""A database error as one line an operator can act on (the CLI's ``Error:`` line).

libpq reports why a connection failed only in its message text (``pgcode`` is unset
before a session exists), so the PostgreSQL cases are told apart by the phrases libpq
has used for years. The line names the server and database but never the password.
"""

from __future__ import annotations

import re

import peewee

#: Server errors meaning "the schema is not what this code expects": a table or column
#: missing (SQLite's "no such table", PostgreSQL 42P01 / 42703).
_MISSING_SCHEMA = re.compile(
    r"no such (table|column)|relation \"[^\"]+\" does not exist|column \"[^\"]+\" does not exist"
)
_PG_MISSING_DB = re.compile(r'database "([^"]+)" does not exist')
_PG_AUTH = (
    "password authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    'role "',
    "peer authentication failed",
    "ident authentication failed",
)
_PG_UNREACHABLE = (
    "connection refused",
    "could not translate host name",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "could not connect",
    "server closed the connection",
    "connection timed out",
)


def explain(exc: BaseException, db: peewee.Database | None) -> str:
    """What went wrong with ``db`` (the database ``exc`` came from) and what to do."""
    reason = _first_line(exc)
    lower = reason.lower()
    if _MISSING_SCHEMA.search(lower):
        return f"the database schema is incomplete ({reason}): run 'postern db upgrade'"
    if isinstance(db, peewee.PostgresqlDatabase):
        return _explain_postgres(reason, lower, db)
    if isinstance(db, peewee.SqliteDatabase):
        path = db.database
        if "readonly" in lower or "unable to open" in lower or "disk i/o" in lower:
            return (
                f"cannot open the SQLite database {path} for writing ({reason}): make it and its directory "
                "writable by this user, or fix data_dir / database.url"
            )
        return f"the SQLite database {path} failed ({reason}): check the disk and the file, then retry"
    return f"database error ({reason}): check database.url"


def _explain_postgres(reason: str, lower: str, db: peewee.PostgresqlDatabase) -> str:
    params = db.connect_params
    host, port = params.get("host") or "localhost", params.get("port") or 5432
    where = f"{host}:{port}"
    missing = _PG_MISSING_DB.search(reason)
    if missing:
        name = missing.group(1)
        return (
            f"database '{name}' does not exist on {where}: "
            f"create it (createdb -h {host} -p {port} {name}) or fix database.url"
        )
    if any(phrase in lower for phrase in _PG_AUTH):
        user = params.get("user") or "(default user)"
        return (
            f"PostgreSQL on {where} refused user '{user}' ({reason}): "
            "fix the user and password in database.url, or the server's pg_hba.conf"
        )
    if any(phrase in lower for phrase in _PG_UNREACHABLE):
        return (
            f"cannot reach PostgreSQL at {where} ({reason}): start the server, or fix the host and port in database.url"
        )
    return f"PostgreSQL at {where}, database '{db.database}', failed ({reason}): check the server and database.url"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libpq prefixes 'connection to server at "h" (addr), port p failed: FATAL:  ...'
    line = text.splitlines()[0]
    line = re.sub(r"^connection to server at .*? failed: ", "", line)
    return re.sub(r"^(FATAL|ERROR):\s+", "", line).strip()
