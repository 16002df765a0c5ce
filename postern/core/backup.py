"""Backups and restores of a Postern installation, and what an upgrade would apply.

A backup is a directory: the database (``postern.db``, a SQLite copy made with the
online backup API, or ``postern.pgdump``, a ``pg_dump`` custom-format archive), the
secrets that live outside the database (``secrets/``: the key-encryption key that
seals the DKIM private keys), and ``manifest.json`` naming Postern's version, the
schema version, the database kind, when it was made and every file with its SHA-256.
docs/backups.md is the operator's guide.

Consistency: SQLite's backup API copies the database as one read transaction sees it
and ``pg_dump`` reads one snapshot, so a backup taken while Postern serves holds every
message whose ``250`` was given before the snapshot, whole, and none in part (docs/
design.md, "Crash consistency"). The database is copied before the secrets, so every
DKIM key in the copy was sealed with a key-encryption key that already existed when
``secrets/`` was copied.

What the secrets are: webhook signing secrets and the download-link key are sealed
with keys kept *in* the database (``server_secret``), so the database copy carries
them. The DKIM private keys are sealed with a key that never lives in the database:
``mail.dkim_key_secret`` when configured (the operator keeps it, in the config or the
environment) or ``<data_dir>/secrets/dkim.key``, which the backup copies.

A restore never migrates: it puts back exactly what was backed up and says which
migrations are pending; ``postern db upgrade --dry-run`` lists them and ``postern db
upgrade`` (or a start with ``database.auto_migrate``) applies them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from postern import __version__
from postern.core import migrations
from postern.core.db import SQLITE_BUSY_TIMEOUT_MS
from postern.core.errors import SetupError

MANIFEST = "manifest.json"
FORMAT = 1
SQLITE_FILE = "postern.db"
PG_FILE = "postern.pgdump"
SECRETS = "secrets"
SECRETS_README = "README.txt"

README_TEXT = """\
These files are Postern's secrets that do not live in its database.

dkim.key is the key-encryption key that decrypts the DKIM private keys stored (sealed)
in the database. Anyone holding this directory AND the database of this backup can
sign mail as every tenant domain of this Postern, and read the webhook signing
secrets and download-link key (those are sealed with keys inside the database).

Keep this backup as safely as the database itself: same access rules, same place, no
group or other permissions (files 0600, directories 0700). A backup without these
files restores the mail, but every DKIM key then has to be replaced (new DNS records).

If mail.dkim_key_secret is set in the configuration, the DKIM keys are sealed with
that secret instead of dkim.key: keep that secret with the backup too.
"""


class BackupError(SetupError):
    """A backup cannot be made, or a backup cannot (or must not) be restored."""

    code = "backup_error"


@dataclass(frozen=True)
class Pending:
    """A migration the database has not had yet."""

    version: int
    name: str
    summary: str  # the first line of the migration module's docstring


@dataclass
class BackupResult:
    directory: Path
    manifest: dict
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    manifest: dict
    database: str  # where the database went: a file, or "schema S of postgresql://host/db"
    secrets: list[str]  # files written under <data_dir>/secrets
    pending: list[Pending]
    warnings: list[str] = field(default_factory=list)


# -- migrations ------------------------------------------------------------------------


def pending_migrations(current: int) -> list[Pending]:
    """The migrations a database at schema version ``current`` has still to run, in order."""
    return [
        Pending(m.version, m.name, _summary(m.module.__doc__)) for m in migrations.available() if m.version > current
    ]


def _summary(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` database URL; None for PostgreSQL or ``:memory:``."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return Path(path) if path and path != ":memory:" else None


def database_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgresql"
    raise BackupError(f"database.url: unsupported scheme '{scheme}' (use sqlite:/// or postgresql://)")


# -- backup ----------------------------------------------------------------------------


def create_backup(config, directory: str | os.PathLike) -> BackupResult:
    """Back ``config``'s database and secrets up into ``directory`` (new or empty)."""
    target = Path(directory)
    kind = database_kind(config.database_url)
    if kind == "postgresql":
        pg_dump = _pg_binary("pg_dump")  # before anything is written
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory: back up into a new directory")
    _private_dir(target)
    manifest: dict = {
        "format": FORMAT,
        "postern_version": __version__,
        "database": kind,
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if kind == "sqlite":
        manifest["schema_version"] = _backup_sqlite(config, target / SQLITE_FILE)
    else:
        schema, version = _backup_postgresql(pg_dump, config.database_url, target / PG_FILE)
        manifest["schema_version"], manifest["postgresql_schema"] = version, schema
    # After the database: every key sealed in the copy has its key-encryption key by now.
    copied = _copy_secrets(Path(config.data_dir) / SECRETS, target / SECRETS)
    warnings = []
    if config.mail.dkim_key_secret:
        manifest["dkim_key_secret_configured"] = True
        warnings.append(
            "mail.dkim_key_secret is set: the DKIM keys are sealed with it, not with a file; "
            "keep that secret with this backup (it is not in it)"
        )
    elif "dkim.key" not in copied:
        warnings.append(f"no {SECRETS}/dkim.key in {config.data_dir} yet: no DKIM key has been made")
    files = [SQLITE_FILE if kind == "sqlite" else PG_FILE] + [f"{SECRETS}/{name}" for name in copied]
    manifest["files"] = [_describe(target, name) for name in files]
    _write_private(target / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return BackupResult(target, manifest, warnings)


def _backup_sqlite(config, destination: Path) -> int:
    source_path = sqlite_path(config.database_url)
    if source_path is None or not source_path.is_file():
        raise BackupError(f"no SQLite database at {source_path or config.database_url}: nothing to back up")
    _write_private(destination, b"")
    source = sqlite3.connect(source_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    copy = sqlite3.connect(destination)
    try:
        # One step (pages=-1): one read transaction, so the copy is one consistent state,
        # while writers go on (WAL). A copy that retried page by page could race them.
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        _quick_check(copy, destination)
        return _sqlite_schema_version(copy)
    finally:
        copy.close()
        source.close()


def _backup_postgresql(pg_dump: str, url: str, destination: Path) -> tuple[str, int]:
    conn = _pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_schema()")
            schema = cur.fetchone()[0]
            version = _pg_schema_version(cur, schema)
    finally:
        conn.close()
    if schema is None:
        raise BackupError("the PostgreSQL connection has no current schema (check search_path)")
    _write_private(destination, b"")
    dsn, env = _libpq(url)
    args = [pg_dump, "--format=custom", f'--schema="{schema}"', f"--file={destination}", f"--dbname={dsn}"]
    _run(args, env, "pg_dump")
    os.chmod(destination, 0o600)
    return schema, version


# -- restore ---------------------------------------------------------------------------


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of the backup in ``directory``, every file checked against its SHA-256."""
    source = Path(directory)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} is not a Postern backup: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST} cannot be read ({exc}): the backup is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source / MANIFEST}: not a backup format this Postern reads (format {FORMAT})")
    for key in ("database", "schema_version", "files"):
        if key not in manifest:
            raise BackupError(f"{source / MANIFEST} has no '{key}': the backup is damaged")
    for entry in manifest["files"]:
        name = _safe_name(entry.get("path", ""))
        path = source / name
        if not path.is_file():
            raise BackupError(f"the backup is incomplete: {path} is missing; restore refused")
        if _sha256(path) != entry.get("sha256"):
            raise BackupError(
                f"{path} does not match its SHA-256 in {MANIFEST}: the backup is damaged or was "
                "changed since it was made; restore refused"
            )
    database_file = SQLITE_FILE if manifest["database"] == "sqlite" else PG_FILE
    if database_file not in {e["path"] for e in manifest["files"]}:
        raise BackupError(f"{source / MANIFEST} lists no {database_file}: the backup is damaged")
    return manifest


def restore_backup(config, directory: str | os.PathLike, *, force: bool = False) -> RestoreResult:
    """Put the backup in ``directory`` back as ``config``'s database and secrets.

    Everything is checked before anything is written: the checksums, the schema (never
    newer than this Postern knows), the database kind, and that neither the database nor
    a secret of the same name already exists (unless ``force``). Migrations are not run.
    """
    source = Path(directory)
    manifest = read_manifest(source)
    latest = migrations.latest_version()
    version = manifest["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise BackupError(f"{source / MANIFEST}: schema_version is not a number: the backup is damaged")
    if version > latest:
        raise BackupError(
            f"the backup's schema is at version {version}, newer than this Postern knows ({latest}): "
            "restore it with the Postern that made it (or a newer one)"
        )
    kind = database_kind(config.database_url)
    if manifest["database"] != kind:
        raise BackupError(
            f"the backup holds a {manifest['database']} database and database.url is {kind}: "
            f"restore it into a {manifest['database']} database"
        )
    secrets = [e["path"] for e in manifest["files"] if e["path"].startswith(f"{SECRETS}/")]
    secrets = [name for name in secrets if name != f"{SECRETS}/{SECRETS_README}"]
    clashing = _clashing_secrets(source, Path(config.data_dir), secrets)
    if kind == "sqlite":
        target = sqlite_path(config.database_url)
        if target is None:
            raise BackupError("database.url is an in-memory SQLite database: nowhere to restore to")
        if _sqlite_schema_version_of(source / SQLITE_FILE) != version:
            raise BackupError(f"{source / SQLITE_FILE} is not at the schema version its manifest says ({version})")
        existing = _sqlite_has_tables(target)
        where = str(target)
    else:
        pg_restore = _pg_binary("pg_restore")
        existing = _pg_has_tables(config.database_url, manifest.get("postgresql_schema"))
        where = f"schema {manifest.get('postgresql_schema')} of {_without_password(config.database_url)}"
    if not force and (existing or clashing):
        what = [f"a database ({where})"] if existing else []
        what += [str(Path(config.data_dir) / name) for name in clashing]
        raise BackupError(
            f"restore would overwrite {' and '.join(what)}: stop Postern and use --force to replace it with the backup"
        )
    if kind == "sqlite":
        _restore_sqlite(source / SQLITE_FILE, target)
    else:
        _restore_postgresql(pg_restore, config.database_url, manifest.get("postgresql_schema"), source / PG_FILE)
    written = []
    for name in secrets:
        destination = Path(config.data_dir) / name
        _private_dir(destination.parent)
        _write_private(destination, (source / name).read_bytes())
        written.append(str(destination))
    warnings = []
    if manifest.get("dkim_key_secret_configured") and not config.mail.dkim_key_secret:
        warnings.append(
            "the backup's DKIM keys are sealed with mail.dkim_key_secret, which this configuration "
            "does not set: set the same secret, or DKIM signing fails"
        )
    return RestoreResult(manifest, where, written, pending_migrations(version), warnings)


def _clashing_secrets(source: Path, data_dir: Path, names: list[str]) -> list[str]:
    """Secrets of the backup that exist at the target with other contents."""
    return [
        name
        for name in names
        if (data_dir / name).exists() and (data_dir / name).read_bytes() != (source / name).read_bytes()
    ]


def _restore_sqlite(backup: Path, target: Path) -> None:
    _private_dir(target.parent, tighten=False)  # may be a directory of the operator's
    if not target.exists():
        _write_private(target, b"")
    source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    destination = sqlite3.connect(target, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        source.backup(destination)
        destination.execute("PRAGMA journal_mode=WAL")  # as Postern runs it (core/db.py)
        _quick_check(destination, target)
    finally:
        destination.close()
        source.close()


def _restore_postgresql(pg_restore: str, url: str, schema: str | None, archive: Path) -> None:
    """Drop every table of the schema, then restore the archive into it.

    Dropping first (rather than only ``pg_restore --clean``, which drops what the archive
    holds) leaves nothing of the database that was there: no table of a newer schema
    that the next ``db upgrade`` would find with stale rows in it."""
    if not schema:
        raise BackupError("the backup's manifest names no PostgreSQL schema: the backup is damaged")
    conn = _pg_connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_schema()")
            current = cur.fetchone()[0]
            if current != schema:
                raise BackupError(
                    f"the backup is of PostgreSQL schema '{schema}' and database.url uses '{current}': "
                    "restore into a database whose search_path is that schema"
                )
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s",
                (schema,),
            )
            for (table,) in cur.fetchall():
                cur.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}" CASCADE')
            cur.execute(
                "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = %s",
                (schema,),
            )
            for (sequence,) in cur.fetchall():
                cur.execute(f'DROP SEQUENCE IF EXISTS "{schema}"."{sequence}" CASCADE')
    finally:
        conn.close()
    dsn, env = _libpq(url)
    with tempfile.TemporaryDirectory() as scratch:
        # Every entry but the schema itself, which exists (it is the connection's).
        listing = _run([pg_restore, "--list", str(archive)], env, "pg_restore")
        entries = [line for line in listing.splitlines() if not _is_schema_entry(line, schema)]
        list_file = Path(scratch, "list")
        list_file.write_text("\n".join(entries) + "\n")
        args = [pg_restore, "--no-owner", "--no-acl", "--single-transaction", "--exit-on-error"]
        _run([*args, f"--use-list={list_file}", f"--dbname={dsn}", str(archive)], env, "pg_restore")


def _is_schema_entry(line: str, schema: str) -> bool:
    # "6; 2615 16387 SCHEMA - t_abc owner"
    parts = line.split()
    return len(parts) >= 5 and not line.startswith(";") and parts[3] == "SCHEMA" and parts[5:6] == [schema]


# -- helpers ---------------------------------------------------------------------------


def _private_dir(path: Path, *, tighten: bool = True) -> None:
    """``path`` and missing parents made, ``path`` 0700 when made (or when ``tighten``)."""
    if not path.is_dir() or tighten:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """``path`` holds ``data``, written 0600 (through a temporary file when it has data)."""
    temporary = path.with_name(f".{path.name}.tmp") if data else path
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if temporary != path:
        os.replace(temporary, path)


def _copy_secrets(source: Path, destination: Path) -> list[str]:
    """Copy every file of ``<data_dir>/secrets`` and write the README; the names copied."""
    _private_dir(destination)
    copied = []
    if source.is_dir():
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.is_symlink() and path.name != SECRETS_README:
                _write_private(destination / path.name, path.read_bytes())
                copied.append(path.name)
    _write_private(destination / SECRETS_README, README_TEXT.encode())
    return [*copied, SECRETS_README]


def _describe(root: Path, name: str) -> dict:
    path = root / name
    return {"path": name, "sha256": _sha256(path), "bytes": path.stat().st_size}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    """A manifest path that stays inside the backup directory."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BackupError(f"{MANIFEST} names a file outside the backup ('{name[:80]}'): restore refused")
    return name


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    result = conn.execute("PRAGMA quick_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{path} fails SQLite's integrity check ({result})")


def _sqlite_schema_version(conn: sqlite3.Connection) -> int:
    try:
        return conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
    except sqlite3.OperationalError:  # no such table: never migrated
        return 0


def _sqlite_schema_version_of(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _sqlite_schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a SQLite database ({exc})") from None
    finally:
        conn.close()


def _sqlite_has_tables(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return True  # something is there that is no database: do not overwrite it unasked
    finally:
        conn.close()


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} is not installed (or not on PATH): PostgreSQL backups and restores need it; "
            "install postgresql-client (e.g. apt install postgresql-client), of the server's major version or newer"
        )
    return found


def _pg_connect(url: str):
    try:
        import psycopg2
    except ImportError:
        raise BackupError("PostgreSQL needs the 'postgres' extra: pip install 'postern[postgres]'") from None
    dsn, env = _libpq(url)
    try:
        return psycopg2.connect(dsn, password=env["PGPASSWORD"]) if "PGPASSWORD" in env else psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise BackupError(f"cannot connect to {_without_password(url)}: {str(exc).strip()}") from None


def _pg_schema_version(cur, schema: str) -> int:
    cur.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_migrations',))
    if cur.fetchone()[0] is None:
        return 0
    cur.execute(f'SELECT MAX(version) FROM "{schema}".schema_migrations')
    return cur.fetchone()[0] or 0


def _pg_has_tables(url: str, schema: str | None) -> bool:
    conn = _pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = COALESCE(%s, current_schema())", (schema,))
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


def _libpq(url: str) -> tuple[str, dict]:
    """The URL for libpq without its password, and an environment carrying the password
    (``PGPASSWORD``) so it never shows on a command line."""
    parts = urlsplit(url.replace("postgres://", "postgresql://", 1))
    env = dict(os.environ)
    if parts.password is not None:
        from urllib.parse import unquote

        env["PGPASSWORD"] = unquote(parts.password)
    return _without_password(url), env


def _without_password(url: str) -> str:
    parts = urlsplit(url.replace("postgres://", "postgresql://", 1))
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def _run(args: list[str], env: dict, what: str) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {what} ({exc.strerror})") from None
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout
