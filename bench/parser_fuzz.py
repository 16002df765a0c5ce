"""Long parser-fuzzing runs (issue 10, item 4): inputs tried and crashes per target.

The targets and oracles are tests/support/fuzz.py, the same that tests/test_parser_fuzz.py
runs at CI size; here a crash is counted and the run goes on, so the table says how
many of N inputs failed, not only that one did. Everything runs against real parts on
a temporary SQLite database (``--database-url`` for PostgreSQL):

    python bench/parser_fuzz.py                          # 100,000 inputs per target (hours)
    python bench/parser_fuzz.py --examples 5000          # ~15 minutes on a 2-core VM
    python bench/parser_fuzz.py --only mime,dns_legal
    python bench/parser_fuzz.py --atheris 200000         # coverage-guided MIME parse (atheris)

Targets: mime (``mime.parse`` on raw, structured and mutated messages), ingest (parse
and store in the database), smtp (random command sequences and data to aiosmtpd with
Postern's handler over a socket), dns_legal (legal queries: no FORMERR allowed),
dns_hostile (random and mutated packets, UDP and TCP), json (random bodies to every
documented write operation through the API app).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (puts tests/ on sys.path)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import fuzz

TARGETS = ("mime", "ingest", "smtp", "dns_legal", "dns_hostile", "json")


class Counter:
    def __init__(self):
        self.tried = 0
        self.crashes = collections.Counter()

    def run(self, check, *args) -> None:
        self.tried += 1
        try:
            check(*args)
        except fuzz.Crash as crash:
            self.crashes[str(crash).split("\n")[0][:150]] += 1


def hypothesis_run(examples: int, strategy, body) -> None:
    """``body(value)`` for ``examples`` generated values; nothing it does stops the run."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(value=strategy)
    def run(value):
        body(value)

    run()


class World:
    """A migrated database with tenant acme, inbox box@acme…, and the servers under test."""

    def __init__(self, tmp: Path, database_url: str | None):
        from support.dns import dns_config_text, free_udp_and_tcp_port
        from support.world import INFO, make_tenant

        from postern.core import migrations
        from postern.core.auth import authenticate
        from postern.core.config import load_config
        from postern.core.db import database, open_database
        from postern.core.inboxes import create_inbox
        from postern.core.runtime import build_postern

        url = database_url or f"sqlite:///{tmp}/postern.db"
        config_file = tmp / "postern.toml"
        config_file.write_text(dns_config_text(free_udp_and_tcp_port()))
        env = {"POSTERN_DATA_DIR": str(tmp / "data"), "POSTERN_DATABASE_URL": url}
        open_database(url)
        database.connect(reuse_if_open=True)
        migrations.upgrade()
        self.postern = build_postern(load_config(config_file, environ=env))
        self.acme = make_tenant("acme")
        agent = self.acme.agent_key()
        principal = authenticate(agent.agent_key, "agent", INFO)
        self.inbox = create_inbox(self.postern, principal, INFO, {"username": "box"})[0]


def run_target(name: str, world: World, examples: int) -> Counter:
    counter = Counter()
    if name == "mime":
        from postern.core.mail.ingest import limits_for

        limits = limits_for(world.postern)
        hypothesis_run(examples, fuzz.mime_input, lambda raw: counter.run(fuzz.check_mime, raw, limits))
    elif name == "ingest":
        strategy = st.one_of(fuzz.mime_part(), fuzz.mutated_message())
        hypothesis_run(
            examples, strategy, lambda raw: counter.run(fuzz.check_ingest, world.postern, raw, world.inbox.address)
        )
    elif name == "smtp":
        server = fuzz.RunningSmtp(world.postern)
        try:
            hypothesis_run(
                examples, fuzz.smtp_session, lambda cmds: counter.run(fuzz.check_smtp_session, server.port, cmds)
            )
        finally:
            server.stop()
    elif name in ("dns_legal", "dns_hostile"):
        from support.dns import RunningDns

        ns = RunningDns(world.postern)
        legal = name == "dns_legal"
        strategy = st.tuples(fuzz.legal_query() if legal else fuzz.dns_packet, st.booleans())
        try:
            hypothesis_run(
                examples, strategy, lambda v: counter.run(fuzz.check_dns, ns.host, ns.port, v[0], v[1], legal)
            )
        finally:
            ns.stop()
    elif name == "json":
        run_json(world, examples, counter)
    return counter


def run_json(world: World, examples: int, counter: Counter) -> None:
    import falcon.testing
    from test_parser_fuzz import write_operations
    from test_tenancy import objects_of

    from postern.api import create_app

    client = falcon.testing.TestClient(create_app(world.postern))
    mine, me = objects_of(world.postern, world.acme, "fuzzer")
    admin_side, _ = objects_of(world.postern, world.acme, "adminside")
    operations = write_operations(client)
    for method, path, auth, fields in operations:
        ids = admin_side if auth == "admin" else mine
        url = fuzz.fill_path(path, ids)
        key = world.acme.admin_token if auth == "admin" else me.agent_key
        headers = {"Authorization": f"Bearer {key}"} if auth else {}

        def send(body, method=method, url=url, headers=headers):
            counter.run(
                lambda: fuzz.check_json_response(client.simulate_request(method, url, headers=headers, json=body))
            )

        hypothesis_run(max(1, examples // len(operations)), fuzz.body_for(fields), send)


def atheris_mime(runs: int) -> int:
    """Coverage-guided: atheris mutates bytes towards new branches of the email package
    and Postern's MIME code. Runs in a child, since atheris ends its process."""
    code = f"""
import sys, atheris
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / "tests")!r})
from postern.core.mail import mime
from support import fuzz
atheris.instrument_all()  # email was imported before any import hook could instrument it
limits = mime.MailLimits()
def one(data):
    try:
        fuzz.check_mime(data, limits)
    except fuzz.Crash as crash:
        print("CRASH", str(crash)[:200], repr(data[:200]), file=sys.stderr, flush=True)
atheris.Setup([sys.argv[0], "-runs={runs}", "-max_len=4096"], one)
atheris.Fuzz()
"""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    crashes = [line for line in proc.stderr.splitlines() if line.startswith("CRASH")]
    done = [line for line in proc.stderr.splitlines() if "DONE" in line]  # libFuzzer's last status line
    print(f"atheris mime: {done[-1] if done else proc.stderr[-1500:]}")
    print(f"atheris mime: {runs:,} runs asked, {len(crashes)} crashes, {time.monotonic() - start:.0f} s")
    for line in crashes[:5]:
        print("   ", line)
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--database-url", default=os.environ.get("POSTERN_TEST_DATABASE_URL"))
    parser.add_argument("--atheris", type=int, default=0, help="also run atheris on MIME parse for this many runs")
    args = parser.parse_args()

    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns of every bad command
    tmp = Path(tempfile.mkdtemp(prefix="postern-fuzz-"))
    rows = []
    try:
        world = World(tmp, args.database_url)
        for name in args.only.split(","):
            start = time.monotonic()
            counter = run_target(name, world, args.examples)
            rows.append((name, counter, time.monotonic() - start))
            print(f"  {name}: {counter.tried} inputs, {sum(counter.crashes.values())} crashes", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'target':<12} {'inputs tried':>13} {'crashes':>8} {'seconds':>8}")
    for name, counter, seconds in rows:
        print(f"{name:<12} {counter.tried:>13,} {sum(counter.crashes.values()):>8} {seconds:>8.0f}")
        for message, count in counter.crashes.most_common(5):
            print(f"    {count} x {message}")
    total = sum(sum(c.crashes.values()) for _, c, _ in rows)
    harness.record(
        "parser fuzz crashes",
        total,
        "crashes",
        baseline="inputs tried",
        baseline_value=sum(c.tried for _, c, _ in rows),
        target="0",
        met=total == 0,
    )
    status = 1 if total else 0
    if args.atheris:
        status |= atheris_mime(args.atheris)
    return status


if __name__ == "__main__":
    sys.exit(main())
