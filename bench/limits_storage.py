"""Where rate-limit counters live: exact across processes, and at what cost per check.

Fixed-window counters. One check = one statement that increments the 4 keys of a request
(agent key, enrollment, customer, client IP) and returns their new counts::

    INSERT INTO rate_counter(key, window_start, hits) VALUES (?,?,1),(?,?,1),(?,?,1),(?,?,1)
    ON CONFLICT(key, window_start) DO UPDATE SET hits = rate_counter.hits + excluded.hits
    RETURNING key, hits

``--procs`` (2) processes x ``--threads`` (4) threads, one connection per thread, hammer
for ``--seconds`` (3) per storage. Each thread has its own agent key and client IP; the
enrollment and customer keys are shared by every thread of both processes (one busy
customer: the hot rows). Keys are sorted within a statement (PostgreSQL would otherwise
deadlock on the shared rows). Storages:

- ``sqlite OFF disk`` / ``sqlite OFF shm``: the counters in a file of their own, WAL,
  ``synchronous=OFF``, ``busy_timeout=5000``, autocommit (the single statement takes the
  write lock when it starts), in a temp dir on the data disk (``--data-dir``) and in /dev/shm;
- ``sqlite NORMAL disk`` / ``sqlite FULL disk``: the same with ``synchronous=NORMAL`` and
  ``FULL`` (FULL is Postern's main database default: one fsync per commit);
- ``pg logged`` / ``pg logged sync_commit=off`` / ``pg unlogged``: PostgreSQL, autocommit,
  an ordinary table (WAL flushed at each commit), the same with ``SET synchronous_commit =
  off`` on the connection, and an UNLOGGED table (tables ``bench_rl_*``, dropped after);
- ``limits memory`` / ``limits redis``: the ``limits`` package, ``FixedWindowRateLimiter.hit()``
  on each of the 4 keys (4 round trips), with MemoryStorage (one per process) and
  RedisStorage; skipped when the package or Redis is missing;
- ``redis 1 round trip``: what Postern would write for Redis itself: one Lua script that
  INCRs the 4 keys and returns their counts, like the SQL statement;
- baselines: ``no-op check`` (the loop, the clock and the window arithmetic) and
  ``sqlite SELECT 1`` on a connection set up as Postern's main database.

Exact: for every (key, window) the stored count equals the increments the threads made,
and the counts the statement returned for it are 1..n, each once (no lost or doubled
update). For ``limits`` (``hit()`` returns a bool) each process reads the counts it sees
after both are done. "final counts" sums, per key, the last count returned or seen.

Then the edge: limit 20, ``--edge`` (50) attempts at once (25 threads in each process,
released by one barrier) on the same 4 fresh keys, ``--rounds`` (5) times. An attempt is
allowed when every returned count is <= 20; an exact storage allows exactly 20 each round.

The table gives checks/s, p50/p99 per check and the ratio of checks/s to the fastest exact
storage measured in the same run (stderr adds p99.9 and the maximum). The client threads
share the 2 cores with PostgreSQL and Redis, so figures include the client's own CPU time,
as an API worker's would. Flat out is a stress test: every thread checks back to back.
``--pace N`` spreads N checks/s over the threads instead (a realistic load), and the ratio
then compares p50 to the lowest exact p50.

    python bench/limits_storage.py                    # all storages, 3 s each: ~50 s
    python bench/limits_storage.py --pace 2000        # the same at 2,000 checks/s in all
    python bench/limits_storage.py --seconds 10 --only "sqlite OFF disk,pg unlogged"
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import platform
import queue
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from harness import record

WINDOW = 60  # seconds: the fixed window of the throughput phase
EDGE_LIMIT = 20
BIG_LIMIT = 10**12  # the throughput phase never hits its limit
SQLITE_BUSY_MS = 5000
PG_PREFIX = "bench_rl_"

# Latency histogram: buckets 2.5% wide (e^(1/40)), from 10 ns to well over 100 s.
HIST_SCALE = 40
HIST_OFFSET = 740  # -ln(1e-8) * 40 = 737
HIST_SIZE = 1000

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS rate_counter (
    key TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
) WITHOUT ROWID
"""
UPSERT = (
    "INSERT INTO {table}(key, window_start, hits) VALUES {values} "
    "ON CONFLICT(key, window_start) DO UPDATE SET hits = {table}.hits + excluded.hits "
    "RETURNING key, hits"
)


def upsert_sql(table: str, placeholder: str, keys: int = 4) -> str:
    values = ",".join(f"({placeholder},{placeholder},1)" for _ in range(keys))
    return UPSERT.format(table=table, values=values)


# ---- storages: one "counter" object per thread (what one API worker thread holds) -------


class Noop:
    def check(self, keys, ws):
        return None

    def close(self):
        pass


class SqliteSelect1:
    """A connection as Postern opens its main database (core/db.py), asked ``SELECT 1``."""

    def __init__(self, spec):
        self.conn = sqlite3.connect(spec["path"], isolation_level=None, timeout=SQLITE_BUSY_MS / 1000)
        for pragma in ("foreign_keys=1", f"busy_timeout={SQLITE_BUSY_MS}", "synchronous=FULL"):  # WAL: set up
            self.conn.execute(f"PRAGMA {pragma}")

    def check(self, keys, ws):
        self.conn.execute("SELECT 1").fetchall()
        return None

    def close(self):
        self.conn.close()


class SqliteCounter:
    SQL = upsert_sql("rate_counter", "?")

    def __init__(self, spec):
        self.conn = sqlite3.connect(spec["path"], isolation_level=None, timeout=SQLITE_BUSY_MS / 1000)
        self.conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        self.conn.execute(f"PRAGMA synchronous={spec['synchronous']}")

    def check(self, keys, ws):
        params = [v for key in keys for v in (key, ws)]
        return self.conn.execute(self.SQL, params).fetchall()

    def close(self):
        self.conn.close()


class PgCounter:
    def __init__(self, spec):
        import psycopg2

        self.conn = psycopg2.connect(spec["url"])
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        if spec.get("sync_commit_off"):
            self.cur.execute("SET synchronous_commit = off")
        self.sql = upsert_sql(spec["table"], "%s")

    def check(self, keys, ws):
        params = [v for key in keys for v in (key, ws)]
        self.cur.execute(self.sql, params)
        return self.cur.fetchall()

    def close(self):
        self.conn.close()


_LIMITS: dict = {}  # one limits storage per process, shared by its threads
_LIMITS_LOCK = threading.Lock()


def limits_storage(spec):
    # Made once, under a lock: limits' lazy check of its optional dependency is not
    # thread-safe (threads creating RedisStorage at once fail with "The minimum version of
    # 3.0 for 'redis' could not be found. Found version: 0.0.0").
    with _LIMITS_LOCK:
        if spec["name"] not in _LIMITS:
            from limits import storage

            if spec["kind"] == "limits-memory":
                _LIMITS[spec["name"]] = storage.MemoryStorage()
            else:
                _LIMITS[spec["name"]] = storage.RedisStorage(spec["url"], key_prefix=spec["prefix"])
        return _LIMITS[spec["name"]]


class LimitsCounter:
    def __init__(self, spec):
        from limits import RateLimitItemPerHour
        from limits.strategies import FixedWindowRateLimiter

        self.per_hour = RateLimitItemPerHour
        self.limiter = FixedWindowRateLimiter(limits_storage(spec))
        self.item = RateLimitItemPerHour(BIG_LIMIT)

    def check(self, keys, ws):
        for key in keys:
            self.limiter.hit(self.item, key)
        return None

    def allow(self, keys, ws, limit):
        item = self.per_hour(limit)
        return all(self.limiter.hit(item, key) for key in keys)

    def seen(self, key):
        return self.limiter.storage.get(self.item.key_for(key))

    def close(self):
        pass


class RedisCounter:
    """What Postern would do with Redis itself: the 4 keys in one round trip (a Lua script:
    INCR each, EXPIRE a new one, return the counts), like the single SQL statement."""

    SCRIPT = """
    local counts = {}
    for i, key in ipairs(KEYS) do
        counts[i] = redis.call('INCR', key)
        if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
    end
    return counts
    """

    def __init__(self, spec):
        self.client = redis_client(spec["url"])
        self.script = self.client.register_script(self.SCRIPT)
        self.prefix = spec["prefix"]

    def check(self, keys, ws):
        counts = self.script(keys=[f"{self.prefix}:{k}:{ws}" for k in keys], args=[2 * WINDOW])
        return list(zip(keys, counts, strict=True))

    def close(self):
        pass


_REDIS: dict = {}


def redis_client(url):
    """One client (one connection pool) per process, as an API worker would hold."""
    with _LIMITS_LOCK:
        if url not in _REDIS:
            import redis

            _REDIS[url] = redis.Redis.from_url(url)
        return _REDIS[url]


KINDS = {
    "noop": Noop,
    "select1": SqliteSelect1,
    "sqlite": SqliteCounter,
    "pg": PgCounter,
    "limits-memory": LimitsCounter,
    "limits-redis": LimitsCounter,
    "redis": RedisCounter,
}


def make_counter(spec):
    cls = KINDS[spec["kind"]]
    return cls() if cls is Noop else cls(spec)


def allowed(counter, keys, ws, limit) -> bool:
    if hasattr(counter, "allow"):
        return counter.allow(keys, ws, limit)
    return max(hits for _, hits in counter.check(keys, ws)) <= limit


def thread_keys(run: str, proc: int, thread: int) -> list[str]:
    return sorted(
        [f"{run}:agent:{proc}.{thread}", f"{run}:enrollment:1", f"{run}:customer:1", f"{run}:ip:10.0.{proc}.{thread}"]
    )


def edge_keys(run: str, round_: int) -> list[str]:
    return sorted(f"{run}:edge{round_}:{kind}" for kind in ("agent", "enrollment", "customer", "ip"))


# ---- one worker process ------------------------------------------------------------------


def hammer(spec, keys, seconds, start_barrier, out, interval=0.0):
    """One thread's connection and loop: check until its time is up; latencies into a
    histogram, and per (key, window) the number, sum and maximum of the counts returned."""
    try:
        counter = make_counter(spec)
    except Exception as exc:
        out["failed"] = f"{type(exc).__name__}: {exc}"
        start_barrier.abort()
        return
    try:
        _hammer(counter, keys, seconds, start_barrier, out, interval)
    finally:
        counter.close()


def _hammer(counter, keys, seconds, start_barrier, out, interval=0.0):
    hist = [0] * HIST_SIZE
    seen: dict[tuple[str, int], list[int]] = {}
    checks = errors = 0
    last_error = ""
    perf, now, log = time.perf_counter, time.time, math.log
    start_barrier.wait(timeout=120)
    begin = perf()
    end = begin + seconds
    next_at = begin
    while True:
        if interval:  # --pace: one check every `interval` seconds (latency from its actual start)
            delay = next_at - perf()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
        t0 = perf()
        if t0 >= end:
            break
        ws = int(now()) // WINDOW * WINDOW
        try:
            rows = counter.check(keys, ws)
        except Exception as exc:
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
            continue
        dt = perf() - t0
        hist[min(HIST_SIZE - 1, max(0, int(log(dt if dt > 1e-8 else 1e-8) * HIST_SCALE) + HIST_OFFSET))] += 1
        checks += 1
        if rows:
            for key, hits in rows:
                acc = seen.get((key, ws))
                if acc is None:
                    seen[(key, ws)] = [1, hits, hits]
                else:
                    acc[0] += 1
                    acc[1] += hits
                    if hits > acc[2]:
                        acc[2] = hits
        else:  # limits and the baselines return no counts: count the increments made
            for key in keys:
                acc = seen.setdefault((key, 0), [0, 0, 0])
                acc[0] += 1
    out.update(hist=hist, seen=seen, checks=checks, errors=errors, last_error=last_error, elapsed=perf() - begin)


def edge_thread(spec, run, rounds, barrier, ws, out):
    try:
        counter = make_counter(spec)
    except Exception as exc:
        out.append(f"{type(exc).__name__}: {exc}")
        barrier.abort()
        return
    try:
        _edge(counter, run, rounds, barrier, ws, out)
    finally:
        counter.close()


def _edge(counter, run, rounds, barrier, ws, out):
    for r in range(rounds):
        keys = edge_keys(run, r)
        barrier.wait(timeout=120)
        try:
            out.append(allowed(counter, keys, ws, EDGE_LIMIT))
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")


def worker(spec, proc, args, run, start_barrier, end_barrier, edge_barrier, results) -> None:
    try:
        # phase 1: throughput and exactness
        interval = args.procs * args.threads / args.pace if args.pace else 0.0
        outs = [{} for _ in range(args.threads)]
        threads = [
            threading.Thread(
                target=hammer, args=(spec, thread_keys(run, proc, t), args.seconds, start_barrier, o, interval)
            )
            for t, o in enumerate(outs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = sorted(o.get("failed", "~thread ended early") for o in outs if "hist" not in o)
        if failed:
            raise RuntimeError(failed[0].lstrip("~"))
        end_barrier.wait(timeout=120)  # both processes are done: what does this one see?
        views = {}
        if spec["kind"].startswith("limits"):
            probe = make_counter(spec)
            all_keys = {k for p in range(args.procs) for t in range(args.threads) for k in thread_keys(run, p, t)}
            views = {k: probe.seen(k) for k in all_keys}
        # phase 2: the edge, every attempt at once
        edge_outs: list[list] = []
        if spec["edge"]:
            per_proc = args.edge // args.procs + (1 if proc < args.edge % args.procs else 0)
            edge_outs = [[] for _ in range(per_proc)]
            ws = int(time.time()) // 3600 * 3600
            threads = [
                threading.Thread(target=edge_thread, args=(spec, run, args.rounds, edge_barrier, ws, o))
                for o in edge_outs
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        results.put({"proc": proc, "threads": outs, "views": views, "edge": edge_outs})
    except Exception as exc:
        start_barrier.abort()
        end_barrier.abort()
        edge_barrier.abort()
        results.put({"proc": proc, "failed": f"{type(exc).__name__}: {exc}"})


# ---- the parent: set up, run, judge ------------------------------------------------------


def hist_percentile(hist: list[int], p: float) -> float:
    """Nearest-rank percentile in seconds (the bucket's geometric middle)."""
    total = sum(hist)
    rank = max(1, math.ceil(total * p / 100))
    run = 0
    for i, n in enumerate(hist):
        run += n
        if run >= rank:
            return math.exp((i - HIST_OFFSET + 0.5) / HIST_SCALE)
    return float("nan")


def run_storage(spec, args, run) -> dict:
    ctx = mp.get_context("spawn")
    start_barrier = ctx.Barrier(args.procs * args.threads)
    end_barrier = ctx.Barrier(args.procs)
    edge_barrier = ctx.Barrier(args.edge)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker, args=(spec, p, args, run, start_barrier, end_barrier, edge_barrier, results), daemon=True
        )
        for p in range(args.procs)
    ]
    for p in procs:
        p.start()
    got = []
    try:
        for _ in procs:
            got.append(results.get(timeout=args.seconds + 120))
    except queue.Empty:
        got.append({"failed": "a worker process gave no answer in time"})
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()  # our own child, by its handle
            p.join()
    failed = [g["failed"] for g in got if "failed" in g]
    if failed:
        return {"failed": failed[0]}
    threads = [t for g in got for t in g["threads"]]
    hist = [sum(col) for col in zip(*(t["hist"] for t in threads), strict=True)]
    seen: dict[tuple[str, int], list[int]] = {}
    for t in threads:
        for k, (n, s, m) in t["seen"].items():
            acc = seen.setdefault(k, [0, 0, 0])
            acc[0], acc[1], acc[2] = acc[0] + n, acc[1] + s, max(acc[2], m)
    checks = sum(t["checks"] for t in threads)
    elapsed = sum(t["elapsed"] for t in threads) / len(threads)
    edge = [[] for _ in range(args.rounds)]
    for g in got:
        for out in g["edge"]:
            for r, v in enumerate(out):
                edge[r].append(v)
    return {
        "checks": checks,
        "rate": checks / elapsed,
        "p50": hist_percentile(hist, 50),
        "p99": hist_percentile(hist, 99),
        "p999": hist_percentile(hist, 99.9),
        "max": hist_percentile(hist, 100),
        "errors": sum(t["errors"] for t in threads),
        "last_error": next((t["last_error"] for t in threads if t["last_error"]), ""),
        "seen": seen,
        "views": [g["views"] for g in got],
        "edge": edge,
    }


def judge(spec, res, stored: dict | None) -> tuple[bool | None, str]:
    """(exact?, detail). ``stored``: (key, window) -> hits read back from the SQL table."""
    seen = res["seen"]
    increments = sum(n for n, _, _ in seen.values())
    if spec["kind"] in ("noop", "select1"):
        return None, ""
    if not res["checks"]:
        return False, "no check succeeded"
    if spec["kind"].startswith("limits"):
        final = {key: max(view.get(key, 0) for view in res["views"]) for key, _ in seen}
        total = sum(final.values())
        short = [k for (k, _), (n, _, _) in seen.items() if final[k] != n]
        detail = f"final counts {total:,} / increments {increments:,}"
        if short:
            detail += f"; {len(short)} of {len(seen)} keys off (each process sees only its own hits)"
        return not short, detail
    bad = []
    for (key, ws), (n, s, m) in seen.items():
        if m != n or s != n * (n + 1) // 2 or (stored is not None and stored.get((key, ws)) != n):
            bad.append(key)
    extra = set(stored or {}) - set(seen)
    total = sum(m for _, _, m in seen.values())
    detail = f"final counts {total:,} / increments {increments:,}"
    if stored is not None:
        detail += f", stored {sum(stored.values()):,}"
    if bad or extra:
        detail += f"; {len(bad) + len(extra)} keys wrong"
    return not bad and not extra, detail


def read_sqlite(path: Path, run: str) -> dict:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT key, window_start, hits FROM rate_counter WHERE key LIKE ?", (run + ":%",))
        return {(k, ws): h for k, ws, h in rows if ":edge" not in k}


def read_pg(url: str, table: str, run: str) -> dict:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT key, window_start, hits FROM {table} WHERE key LIKE %s", (run + ":%",))
        return {(k, ws): h for k, ws, h in cur.fetchall() if ":edge" not in k}


def redis_up(url: str) -> str:
    """'' when a Redis answers PING at ``url``, else why not."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
    except OSError as exc:
        return f"no Redis at {url} ({exc.strerror or exc})"
    return "" if answer.startswith(b"+PONG") else f"Redis at {url} answered {answer[:40]!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="hammering time per storage [3]")
    parser.add_argument("--procs", type=int, default=2, help="worker processes [2]")
    parser.add_argument("--threads", type=int, default=4, help="threads per process, one connection each [4]")
    parser.add_argument(
        "--pace", type=float, default=0, help="checks/s in all, spread over the threads; 0: flat out [0]"
    )
    parser.add_argument("--edge", type=int, default=50, help="attempts at once at the limit's edge (limit 20) [50]")
    parser.add_argument("--rounds", type=int, default=5, help="edge rounds, fresh keys each [5]")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis (skipped when none answers)")
    parser.add_argument("--data-dir", default=None, help="where the on-disk SQLite files go [the temp dir]")
    parser.add_argument("--only", help="comma-separated storage names (see the table)")
    args = parser.parse_args()
    if args.edge < args.procs:
        parser.error("--edge must be at least --procs")

    run = uuid.uuid4().hex[:8]
    pg_tables = {"logged": f"{PG_PREFIX}counter_{run}", "unlogged": f"{PG_PREFIX}counter_unlogged_{run}"}
    disk, shm_file = "disk", "shm"
    specs: list[dict] = [
        {"name": "no-op check", "kind": "noop"},
        {"name": "sqlite SELECT 1", "kind": "select1", "file": (disk, "main.db")},
        {"name": "sqlite OFF disk", "kind": "sqlite", "file": (disk, "counters-off.db"), "synchronous": "OFF"},
        {"name": "sqlite OFF shm", "kind": "sqlite", "file": (shm_file, "counters-off.db"), "synchronous": "OFF"},
        {"name": "sqlite NORMAL disk", "kind": "sqlite", "file": (disk, "counters-normal.db"), "synchronous": "NORMAL"},
        {"name": "sqlite FULL disk", "kind": "sqlite", "file": (disk, "counters-full.db"), "synchronous": "FULL"},
        {"name": "pg logged", "kind": "pg", "table": pg_tables["logged"]},
        {"name": "pg logged sync_commit=off", "kind": "pg", "table": pg_tables["logged"], "sync_commit_off": True},
        {"name": "pg unlogged", "kind": "pg", "table": pg_tables["unlogged"]},
        {"name": "limits memory", "kind": "limits-memory", "expect_inexact": True},
        {"name": "limits redis", "kind": "limits-redis", "prefix": f"{PG_PREFIX}{run}l"},
        {"name": "redis 1 round trip", "kind": "redis", "prefix": f"{PG_PREFIX}{run}r"},
    ]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        unknown = set(wanted) - {s["name"] for s in specs}
        if unknown:
            parser.error(f"unknown storage(s) {', '.join(sorted(unknown))}; choose from {[s['name'] for s in specs]}")
        specs = [s for s in specs if s["name"] in wanted]
    kinds = {s["kind"] for s in specs}

    pg_skip = pg_version = ""
    if "pg" in kinds:
        try:
            import psycopg2

            with contextlib.closing(psycopg2.connect(args.database_url, connect_timeout=5)) as conn:
                with conn.cursor() as cur:
                    cur.execute("SHOW server_version")
                    pg_version = cur.fetchone()[0]
        except Exception as exc:
            pg_skip = f"PostgreSQL unavailable ({type(exc).__name__}: {' '.join(str(exc).split())[:90]})"
    try:
        import limits

        limits_version, limits_skip = limits.__version__, ""
    except ImportError:
        limits_version, limits_skip = "", "limits not installed: pip install 'limits[redis]'"
    redis_skip = redis_up(args.redis_url) if kinds & {"redis", "limits-redis"} else ""
    redis_version = ""
    if kinds & {"redis", "limits-redis"} and not redis_skip:
        redis_version = redis_client(args.redis_url).info("server")["redis_version"]
    shm_dir = Path("/dev/shm")
    for spec in specs:
        spec["edge"] = spec["kind"] not in ("noop", "select1")
        spec["url"] = args.database_url if spec["kind"] == "pg" else args.redis_url
        skip = {
            "pg": pg_skip,
            "limits-memory": limits_skip,
            "limits-redis": limits_skip or redis_skip,
            "redis": redis_skip,
        }.get(spec["kind"], "")
        if spec.get("file", ("",))[0] == shm_file and not shm_dir.is_dir():
            skip = "no /dev/shm"
        if skip:
            spec["skip"] = skip

    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-limits-", dir=args.data_dir))
    shm = Path(tempfile.mkdtemp(prefix="postern-bench-limits-", dir=shm_dir)) if shm_dir.is_dir() else None
    for spec in specs:
        if "file" in spec and not spec.get("skip"):
            spec["path"] = str((shm if spec["file"][0] == shm_file else tmp) / spec["file"][1])
    paced = f", paced at {args.pace:g} checks/s" if args.pace else ""
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"SQLite {sqlite3.sqlite_version} | PostgreSQL {pg_version or '-'} | Redis {redis_version or '-'} | "
        f"limits {limits_version or '-'}\n# {args.procs} processes x {args.threads} threads, {args.seconds:g} s per "
        f"storage{paced}; edge: limit {EDGE_LIMIT}, {args.edge} attempts at once x {args.rounds} rounds; "
        f"disk dir {tmp}, shm dir {shm or '-'}",
        flush=True,
    )

    rows = []
    pg_made = False
    try:
        if "pg" in kinds and not pg_skip:
            pg_made = True
            with contextlib.closing(psycopg2.connect(args.database_url)) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for kind, table in pg_tables.items():
                        unlogged = "UNLOGGED " if kind == "unlogged" else ""
                        cur.execute(
                            f"CREATE {unlogged}TABLE {table} (key text NOT NULL, window_start bigint NOT NULL, "
                            "hits bigint NOT NULL, PRIMARY KEY (key, window_start))"
                        )
        for i, spec in enumerate(specs):
            keys_run = f"{run}-{i}"  # keys of their own for each storage
            if spec["kind"] in ("sqlite", "select1") and not spec.get("skip"):
                with contextlib.closing(sqlite3.connect(spec["path"])) as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(SQLITE_DDL)
            if spec.get("skip"):
                print(f"  {spec['name']:<28} skipped: {spec['skip']}", file=sys.stderr, flush=True)
                rows.append((spec, None, None, spec["skip"]))
                continue
            res = run_storage(spec, args, keys_run)
            if "failed" in res:
                print(f"  {spec['name']:<28} FAILED: {res['failed']}", file=sys.stderr, flush=True)
                rows.append((spec, None, False, f"failed: {res['failed']}"))
                continue
            stored = None
            if spec["kind"] == "sqlite":
                stored = read_sqlite(Path(spec["path"]), keys_run)
            elif spec["kind"] == "pg":
                stored = read_pg(spec["url"], spec["table"], keys_run)
                with contextlib.closing(psycopg2.connect(args.database_url)) as conn, conn, conn.cursor() as cur:
                    cur.execute(f"DELETE FROM {spec['table']}")  # the next pg row starts from an empty table
            exact, detail = judge(spec, res, stored)
            print(
                f"  {spec['name']:<28} {res['rate']:>10,.0f} checks/s  p50 {res['p50'] * 1e6:8.1f} us  "
                f"p99 {res['p99'] * 1e6:9.1f} us  p99.9 {res['p999'] * 1e6:9.1f} us  max {res['max'] * 1e3:6.1f} ms  "
                f"errors {res['errors']}  {detail}",
                file=sys.stderr,
                flush=True,
            )
            rows.append((spec, res, exact, detail))
    finally:
        if pg_made:
            with contextlib.suppress(Exception), contextlib.closing(psycopg2.connect(args.database_url)) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for table in pg_tables.values():
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
        if kinds & {"redis", "limits-redis"} and not redis_skip:
            with contextlib.suppress(Exception):
                client = redis_client(args.redis_url)
                for key in client.scan_iter(match=f"{PG_PREFIX}{run}*", count=1000):
                    client.delete(key)
        shutil.rmtree(tmp, ignore_errors=True)
        if shm:
            shutil.rmtree(shm, ignore_errors=True)

    measured = [(s, r, e, d) for s, r, e, d in rows if r is not None]
    # Flat out, "vs fastest" compares checks/s; paced (every storage keeps up), it compares p50.
    figure = (lambda r: -r["p50"]) if args.pace else (lambda r: r["rate"])
    exact_figures = [(figure(r), s["name"], r) for s, r, e, _ in measured if e]
    best = max(exact_figures, key=lambda x: x[0]) if exact_figures else None
    fastest = best[1] if best else "-"
    fastest_rate = best[2]["rate"] if best else None
    print(
        f"\n{'storage':<28} {'exact?':>6} {'checks/s':>10} {'p50 us':>9} {'p99 us':>9} "
        f"{'vs fastest':>10} {'errors':>7}  edge: allowed of {args.edge} at limit {EDGE_LIMIT}, per round"
    )
    ok = True
    for spec, res, exact, detail in rows:
        if res is None:
            ok = ok and exact is not False  # a storage that failed (not one skipped) fails the run
            print(f"{spec['name']:<28} {'-':>6}  {detail}")
            continue
        shown = "-" if exact is None else ("yes" if exact else "NO")
        if not best:
            ratio = "-"
        elif args.pace:
            ratio = f"{res['p50'] / best[2]['p50']:.2f}x"
        else:
            ratio = f"{res['rate'] / fastest_rate:.2f}x"
        edge = ""
        if spec["edge"]:
            counts = [sum(v is True for v in r) for r in res["edge"]]
            errs = sum(isinstance(v, str) for r in res["edge"] for v in r)
            edge_ok = all(c == EDGE_LIMIT for c in counts)
            edge = ",".join(map(str, counts)) + ("" if not errs else f" ({errs} errors)")
            edge += "  exact" if edge_ok else "  NOT exact"
            if not spec.get("expect_inexact"):
                ok = ok and edge_ok and bool(exact)
            record(
                f"rate-limit edge {spec['name']}: allowed of {args.edge} at limit {EDGE_LIMIT} (worst round)",
                max(counts, key=lambda c: abs(c - EDGE_LIMIT)),
                "requests",
                target=f"= {EDGE_LIMIT}",
                met=edge_ok,
            )
        print(
            f"{spec['name']:<28} {shown:>6} {res['rate']:>10,.0f} {res['p50'] * 1e6:>9.1f} {res['p99'] * 1e6:>9.1f} "
            f"{ratio:>10} {res['errors']:>7}  {edge}"
        )
        if fastest_rate and not args.pace:
            record(
                f"rate-limit check {spec['name']}, checks/s (exact: {shown})",
                res["rate"],
                "checks/s",
                f"fastest exact ({fastest})",
                fastest_rate,
            )
    if args.pace:
        print(f"vs fastest: p50 over that of the exact storage with the lowest p50, {fastest}")
    else:
        print(f"vs fastest: checks/s over those of the fastest exact storage, {fastest}")
    for spec, res, _, detail in measured:
        if res["errors"] or detail:
            print(f"  {spec['name']}: {detail}" + (f"; last error: {res['last_error']}" if res["errors"] else ""))
    print(f"\nexact storages all exact (counts and edge): {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
