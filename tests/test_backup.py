"""Backups and restores (docs/backups.md), on SQLite and PostgreSQL: a backup taken while
a writer keeps ingesting mail restores, into a fresh data directory, to a consistent
Postern whose messages, agent keys, DKIM key and webhook secrets all still work; a damaged
backup, a newer one and an existing database are refused; ``db upgrade --dry-run`` lists
what an older schema lacks and applies nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
import pytest
from click.testing import CliRunner
from support.dns import dns_config_text, free_udp_and_tcp_port
from support.world import INFO, make_tenant, seed_inbox, seed_webhook

from postern.cli.app import cli
from postern.core import backup, dkim, migrations, zones
from postern.core.auth import authenticate
from postern.core.config import config_from_mapping, load_config
from postern.core.db import database, open_database
from postern.core.mail.ingest import ingest
from postern.core.models import DkimKey, Inbox, Message, Webhook
from postern.core.runtime import build_postern
from postern.core.webhooks import signing

BASE = "agents.localhost"
ACME = f"acme.{BASE}"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(free_udp_and_tcp_port()))  # a dns backend: zones hold DKIM records
    return path


@pytest.fixture
def config(config_file, env):
    return load_config(config_file, environ=env)


def postern_cli(config_file, env, *args):
    """``postern --config FILE ARGS`` in process, with ``env`` as the whole POSTERN_* environment."""
    return CliRunner().invoke(cli, ["--config", str(config_file), *args], env=env, catch_exceptions=False)


def fresh_target(env: dict, tmp_path: Path, name: str) -> dict:
    """The environment of a Postern on a new machine: a new data dir and an empty database.

    On SQLite a new file; on PostgreSQL the same schema emptied (pg_restore restores into
    the schema the dump was taken from), after this process let go of its connections."""
    target = dict(env, POSTERN_DATA_DIR=str(tmp_path / name))
    if env["POSTERN_DATABASE_URL"].startswith("sqlite"):
        target["POSTERN_DATABASE_URL"] = f"sqlite:///{tmp_path / name / 'postern.db'}"
    else:
        database.close()
        drop_every_table(env["POSTERN_DATABASE_URL"])
    return target


def drop_every_table(url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        for (table,) in cur.fetchall():
            cur.execute(f'DROP TABLE "{table}" CASCADE')
    conn.close()


def use_database(env: dict, config_file: Path):
    """Point this process's ``database`` at ``env``'s and return a Postern built on it."""
    database.close()
    config = load_config(config_file, environ=env)
    postern = build_postern(config)
    database.connect(reuse_if_open=True)
    return postern


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class World:
    agent_key: str
    agent_id: str
    inbox: Inbox
    webhook_id: str
    webhook_secret: str
    dkim_txt: str


def build_world(postern) -> World:
    enrolled = make_tenant("acme").agent_key(handle="alice")
    inbox = seed_inbox(postern, enrolled)
    webhook = seed_webhook(postern, enrolled)
    zone = zones.build_zone(postern, ACME, ensure_dkim=True)  # as the domains API does: the DKIM key exists
    [txt] = [r.value for r in zone.at(f"postern._domainkey.{ACME}") if r.rtype == "TXT"]
    return World(
        agent_key=enrolled.agent_key,
        agent_id=authenticate(enrolled.agent_key, "agent", INFO).agent_id,
        inbox=inbox,
        webhook_id=webhook.id,
        webhook_secret=signing.decrypt(Webhook.get_by_id(webhook.id).secret, webhook.id),
        dkim_txt=txt,
    )


class Writer:
    """A thread that keeps ingesting mail into one inbox until stopped, as the SMTP
    listener would; ``stored`` counts the messages committed so far."""

    def __init__(self, postern, address: str):
        self.postern, self.address = postern, address
        self.stored = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            with database.connection_context():
                while not self.stop.is_set():
                    n = self.stored
                    raw = (
                        f"From: w@example.org\r\nTo: {self.address}\r\nSubject: w{n}\r\n"
                        f"Message-ID: <w{n}@example.org>\r\n\r\nbody {n}\r\n" + "x" * (n % 300)
                    ).encode()
                    ingest(self.postern, raw, "w@example.org", [self.address])
                    self.stored += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while self.stored < count and self.error is None and dt.datetime.now() < deadline:
            threading.Event().wait(0.01)
        assert self.error is None and self.stored >= count, (self.error, self.stored)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error


def all_messages() -> dict[str, tuple[str, int, bytes]]:
    return {m.id: (m.inbox_id, m.seq, bytes(m.raw)) for m in Message.select()}


# -- the round trip --------------------------------------------------------------------


def test_a_backup_taken_while_mail_arrives_restores_everything_that_matters(postern, config_file, env, tmp_path):
    world = build_world(postern)
    writer = Writer(postern, world.inbox.address)
    writer.wait_for(20)
    before = writer.stored
    result = postern_cli(config_file, env, "backup", str(tmp_path / "bk"))
    during = writer.stored
    writer.wait_for(during + 10)  # still writing after the backup's snapshot
    writer.finish()
    assert result.exit_code == 0, result.output
    assert "secrets decrypts the DKIM keys" in result.output
    original = all_messages()

    # The backup directory: private, with a manifest naming every file and its checksum.
    bk = tmp_path / "bk"
    manifest = json.loads((bk / "manifest.json").read_text())
    kind = "sqlite" if env["POSTERN_DATABASE_URL"].startswith("sqlite") else "postgresql"
    assert manifest["database"] == kind and manifest["schema_version"] == migrations.latest_version()
    assert manifest["postern_version"] and manifest["created_at"].endswith("Z")
    paths = {e["path"] for e in manifest["files"]}
    assert paths == {"postern.db" if kind == "sqlite" else "postern.pgdump", "secrets/dkim.key", "secrets/README.txt"}
    assert (bk / "secrets/dkim.key").read_bytes() == (Path(env["POSTERN_DATA_DIR"]) / "secrets/dkim.key").read_bytes()
    assert "decrypts the DKIM private keys" in (bk / "secrets/README.txt").read_text()
    assert mode(bk) == mode(bk / "secrets") == 0o700
    assert {mode(bk / p) for p in [*paths, "manifest.json"]} == {0o600}

    # Restore on a "new machine": a fresh data dir (no dkim.key) and an empty database.
    target = fresh_target(env, tmp_path, "restored")
    restored = postern_cli(config_file, target, "restore", str(bk))
    assert restored.exit_code == 0, restored.output
    assert "nothing to upgrade" in restored.output
    data_dir = Path(target["POSTERN_DATA_DIR"])
    assert mode(data_dir / "secrets") == 0o700 and mode(data_dir / "secrets/dkim.key") == 0o600
    again = use_database(target, config_file)

    # The same messages, byte for byte, and a consistent snapshot: every message the
    # writer had stored before the backup started, none half-written, no gap in any
    # inbox's sequence, each inbox's counter where its last message is.
    copy = all_messages()
    assert all(original[id_] == row for id_, row in copy.items())
    in_inbox = sorted(seq for inbox_id, seq, _ in copy.values() if inbox_id == world.inbox.id)
    assert 1 + before <= len(in_inbox) <= 1 + during + 1  # the seed message, then the writer's
    assert in_inbox == list(range(1, len(in_inbox) + 1))
    assert Inbox.get_by_id(world.inbox.id).last_seq == len(in_inbox)
    assert len(copy) < len(original)  # mail that came after the snapshot is not in it

    # The same agent key still authenticates, as the same agent.
    assert authenticate(world.agent_key, "agent", INFO).agent_id == world.agent_id

    # The webhook's signing secret still decrypts.
    assert signing.decrypt(Webhook.get_by_id(world.webhook_id).secret, world.webhook_id) == world.webhook_secret

    # The same DKIM key signs: the public key the zone publishes verifies a new signature.
    zone = zones.build_zone(again, ACME)
    [txt] = [r.value for r in zone.at(f"postern._domainkey.{ACME}") if r.rtype == "TXT"]
    assert txt == world.dkim_txt
    raw = f"From: alice@{ACME}\r\nTo: someone@example.org\r\nSubject: after the restore\r\n\r\nhi\r\n".encode()
    signed = dkim.sign(again.config, DkimKey.get_by_id(ACME), raw)
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name)
        return txt.encode()

    assert dkimpy.verify(signed, dnsfunc=dnsfunc) is True
    assert asked == [f"postern._domainkey.{ACME}.".encode()]

    # Restoring over it again is refused without --force, and replaces it with --force.
    database.close()
    refused = postern_cli(config_file, target, "restore", str(bk))
    assert refused.exit_code == 1 and "use --force" in refused.output
    forced = postern_cli(config_file, target, "restore", "--force", str(bk))
    assert forced.exit_code == 0, forced.output
    use_database(target, config_file)
    assert all_messages() == copy


def test_without_its_secrets_a_restored_database_cannot_sign(postern, config_file, env, tmp_path):
    """What secrets/ is for: the same database with another data dir's dkim.key does not open."""
    build_world(postern)
    assert postern_cli(config_file, env, "backup", str(tmp_path / "bk")).exit_code == 0
    stranger = config_from_mapping({"data_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(dkim.DkimKeyUnavailable, match="sealed with another key-encryption key"):
        dkim.sign(stranger, DkimKey.get_by_id(ACME), b"From: a@b\r\n\r\nx\r\n")


# -- refusals --------------------------------------------------------------------------


@pytest.fixture
def made_backup(postern, config_file, env, tmp_path) -> Path:
    build_world(postern)
    result = postern_cli(config_file, env, "backup", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output
    return tmp_path / "bk"


def database_file(bk: Path) -> Path:
    return bk / ("postern.db" if (bk / "postern.db").exists() else "postern.pgdump")


@pytest.mark.parametrize("which", ["database", "secrets/dkim.key"])
def test_a_tampered_backup_is_refused_and_nothing_is_written(made_backup, config_file, env, tmp_path, which):
    path = database_file(made_backup) if which == "database" else made_backup / which
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    target = fresh_target(env, tmp_path, "restored")
    result = postern_cli(config_file, target, "restore", str(made_backup))
    assert result.exit_code == 1
    assert f"Error: {path} does not match its SHA-256 in manifest.json" in result.output
    assert "restore refused" in result.output
    assert not Path(target["POSTERN_DATA_DIR"]).exists()  # no database file, no secret


def test_a_missing_file_or_manifest_is_refused(made_backup, config_file, env, tmp_path):
    target = fresh_target(env, tmp_path, "restored")
    (made_backup / "secrets/dkim.key").unlink()
    result = postern_cli(config_file, target, "restore", str(made_backup))
    assert result.exit_code == 1 and "the backup is incomplete" in result.output
    (made_backup / "manifest.json").unlink()
    result = postern_cli(config_file, target, "restore", str(made_backup))
    assert result.exit_code == 1 and "is not a Postern backup: it has no manifest.json" in result.output


def test_a_manifest_naming_a_file_outside_the_backup_is_refused(made_backup, config_file, env, tmp_path):
    manifest = json.loads((made_backup / "manifest.json").read_text())
    manifest["files"].append({"path": "../postern.toml", "sha256": "0" * 64, "bytes": 1})
    (made_backup / "manifest.json").write_text(json.dumps(manifest))
    result = postern_cli(config_file, fresh_target(env, tmp_path, "restored"), "restore", str(made_backup))
    assert result.exit_code == 1 and "names a file outside the backup" in result.output


def test_a_backup_newer_than_this_postern_is_refused(made_backup, config_file, env, tmp_path):
    manifest = json.loads((made_backup / "manifest.json").read_text())
    manifest["schema_version"] = migrations.latest_version() + 1
    (made_backup / "manifest.json").write_text(json.dumps(manifest))
    target = fresh_target(env, tmp_path, "restored")
    result = postern_cli(config_file, target, "restore", str(made_backup))
    assert result.exit_code == 1 and "newer than this Postern knows" in result.output
    assert not Path(target["POSTERN_DATA_DIR"]).exists()


def test_restoring_over_the_live_database_needs_force(made_backup, config_file, env):
    """The database the backup came from (and its dkim.key, identical) exists: refused."""
    database.close()
    result = postern_cli(config_file, env, "restore", str(made_backup))
    assert result.exit_code == 1
    assert "restore would overwrite a database" in result.output and "use --force" in result.output
    # A data dir whose dkim.key differs is refused too, even with the database gone.
    target = fresh_target(env, env_path(env).parent, "other")
    key = Path(target["POSTERN_DATA_DIR"]) / "secrets/dkim.key"
    key.parent.mkdir(parents=True)
    key.write_text("00" * 32)
    result = postern_cli(config_file, target, "restore", str(made_backup))
    assert result.exit_code == 1 and f"{key}" in result.output and "use --force" in result.output
    assert key.read_text() == "00" * 32


def env_path(env: dict) -> Path:
    return Path(env["POSTERN_DATA_DIR"])


def test_a_backup_goes_into_a_new_or_empty_directory_only(postern, config_file, env, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full/something").write_text("x")
    result = postern_cli(config_file, env, "backup", str(tmp_path / "full"))
    assert result.exit_code == 1 and "is not an empty directory" in result.output


def test_postgresql_without_pg_dump_says_to_install_the_client(monkeypatch, tmp_path):
    monkeypatch.setattr(backup.shutil, "which", lambda name: None)
    config = config_from_mapping({"data_dir": str(tmp_path / "data"), "database": {"url": "postgresql://u@h/db"}})
    with pytest.raises(backup.BackupError, match="pg_dump is not installed.*install postgresql-client"):
        backup.create_backup(config, tmp_path / "bk")
    assert not (tmp_path / "bk").exists()


# -- upgrades --------------------------------------------------------------------------


@pytest.fixture
def older(db_url):
    """A database three migrations behind, built by running the older migrations."""
    open_database(db_url)
    database.connect(reuse_if_open=True)
    db = database.obj
    migrations.SchemaMigration.create_table(safe=True)
    behind = migrations.latest_version() - 3
    for migration in migrations.available()[:behind]:
        with db.atomic():
            migration.module.upgrade(db)
            migrations.SchemaMigration.create(
                version=migration.version, name=migration.name, applied_at=dt.datetime.now()
            )
    yield behind
    database.close()


def schema_state() -> tuple[int, list[str]]:
    return migrations.current_version(), sorted(database.obj.get_tables())


def test_db_upgrade_dry_run_lists_the_pending_migrations_and_applies_none(older, config_file, env):
    state = schema_state()
    result = postern_cli(config_file, env, "db", "upgrade", "--dry-run")
    assert result.exit_code == 0, result.output
    pending = migrations.available()[older:]
    assert f"schema at version {older}; this Postern is at {migrations.latest_version()}" in result.output
    assert "3 migration(s) would run" in result.output
    for migration in pending:
        first_line = migration.module.__doc__.strip().splitlines()[0].strip()
        assert f"{migration.version:4d} {migration.name}: {first_line}" in result.output
    assert "m0001" not in result.output
    assert schema_state() == state
    # Then the real thing applies exactly those.
    result = postern_cli(config_file, env, "db", "upgrade")
    assert [line for line in result.output.splitlines() if line.startswith("applied")] == [
        f"applied {m.name}" for m in pending
    ]
    assert "nothing to apply" in postern_cli(config_file, env, "db", "upgrade", "--dry-run").output


def test_db_upgrade_dry_run_creates_no_database(tmp_path, config_file):
    env = {"POSTERN_DATA_DIR": str(tmp_path / "nothing"), "POSTERN_TRUST_VERIFY": "false"}
    env["POSTERN_DATABASE_URL"] = f"sqlite:///{tmp_path / 'nothing' / 'postern.db'}"
    result = postern_cli(config_file, env, "db", "upgrade", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{migrations.latest_version()} migration(s) would run" in result.output
    assert not (tmp_path / "nothing").exists()


def test_an_older_backup_restores_as_it_was_and_says_to_upgrade(older, config_file, env, tmp_path):
    assert postern_cli(config_file, env, "backup", str(tmp_path / "bk")).exit_code == 0
    target = fresh_target(env, tmp_path, "restored")
    result = postern_cli(config_file, target, "restore", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output
    assert "3 migration(s) pending" in result.output and "postern db upgrade" in result.output
    use_database(target, config_file)
    assert migrations.current_version() == older  # not migrated behind the operator's back
    shutil.rmtree(tmp_path / "bk")
