"""Does answering "404" for another tenant's id take the same time as for an id that
does not exist? (issue 10, item 5)

tests/test_isolation_openapi.py proves the two answers are byte-identical; this measures
the remaining channel, time. One ``postern serve --only api`` (SQLite, 2 workers) with
two tenants; for every documented operation with an id in its path, the attacker's key
sends interleaved requests in random order, in three arms: the other tenant's id; one
made-up id of the same shape, repeated like the foreign one ("known"); a fresh made-up id
per request ("fresh"). Foreign against known holds everything but existence equal, so it
is the leak test; known against fresh is the control, and shows what merely repeating a
URL does (caches anywhere on the path). Per operation: medians, the difference of medians
with a 95% bootstrap interval, and a Mann-Whitney U test. A timing leak shows as an
interval that excludes zero *and* a small p-value, repeatably; on a shared VM single runs
are noisy, so look at the figure across operations, not one row.

    python bench/isolation_timing.py                  # 300 pairs per operation, ~2 min
    python bench/isolation_timing.py --pairs 2000     # tighter intervals
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, World, free_port, postern_cmd, record, running, wait_http

METHODS = ("get", "post", "put", "patch", "delete")
BODIES = {"post": {}, "patch": {}, "put": {}}


def build_world(tmp: Path) -> tuple[World, dict, dict, str, str]:
    """Two tenants with one of every object each; returns the attacker's credentials."""
    from support.world import make_tenant
    from test_tenancy import objects_of

    from postern.core import migrations
    from postern.core.config import load_config
    from postern.core.db import database
    from postern.core.runtime import build_postern

    world = World(tmp, free_port(), free_port(), workers=2)
    world.write_config()
    postern = build_postern(load_config(world.config_file, environ={}))
    with database.connection_context():
        migrations.upgrade()
        acme, globex = make_tenant("acme"), make_tenant("globex")
        theirs, _ = objects_of(postern, globex, "victim")
        mine, _ = objects_of(postern, acme, "mine")  # so the attacker's tenant is not empty either
        agent_key = acme.agent_key(handle="attacker").agent_key
        admin_token = acme.admin_token
    database.close()
    return world, theirs, mine, agent_key, admin_token


def id_operations(port: int) -> list[tuple[str, str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/v1/openapi.json")
    doc = json.loads(conn.getresponse().read())
    from test_tenancy import CAPABILITY_PATHS, PATH_PARAM

    return [
        (method.upper(), path, item[method].get("x-postern-auth"))
        for path, item in doc["paths"].items()
        if PATH_PARAM.search(path) and path not in CAPABILITY_PATHS
        for method in METHODS
        if method in item
    ]


def fill(path: str, objects: dict | None, foreign: dict) -> str:
    """``path`` with ids from ``objects``, or made-up ids shaped like the ``foreign`` ones."""
    from test_tenancy import PATH_PARAM, id_kind

    from postern.core.ids import new_id

    def one(match):
        kind, prefix = id_kind(path, match.group(1))
        if objects:
            return objects[kind]
        if kind == "domain":  # a well-formed name that does not exist, as long as the foreign one
            label, rest = foreign[kind].split(".", 1)
            return f"{new_id('nx')[3:][: len(label)]}.{rest}"
        return new_id(prefix)

    return PATH_PARAM.sub(one, path)


def timed(conn: http.client.HTTPConnection, method: str, url: str, headers: dict, body) -> tuple[float, int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    start = time.perf_counter()
    conn.request(method, url, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    return (time.perf_counter() - start) * 1e6, resp.status, payload


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected)."""
    ranked = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(ranked)
    i, ties = 0, 0.0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        ties += (j - i + 1) ** 3 - (j - i + 1)
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u - n1 * n2 / 2) / sigma if sigma else 0.0
    return math.erfc(abs(z) / math.sqrt(2))


def bootstrap_ci(a: list[float], b: list[float], rounds: int = 1000) -> tuple[float, float]:
    """95% interval of median(a) - median(b)."""
    rng = random.Random(1)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b))) for _ in range(rounds)
    )
    return diffs[int(rounds * 0.025)], diffs[int(rounds * 0.975)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300, help="foreign/missing request pairs per operation")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="postern-isolation-"))
    rows = []
    try:
        world, theirs, _, agent_key, admin_token = build_world(tmp)
        child = Child("postern", postern_cmd("serve", "--only", "api"), tmp / "serve.log", world.env(), tmp)
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            operations = id_operations(world.http_port)
            conn = http.client.HTTPConnection("127.0.0.1", world.http_port, timeout=30)
            rng = random.Random(7)
            for method, path, auth in operations:
                token = admin_token if auth == "admin" else agent_key
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                body = BODIES.get(method.lower())
                fixed = {"foreign": fill(path, theirs, theirs), "known": fill(path, None, theirs)}
                samples = {"foreign": [], "known": [], "fresh": []}
                for i in range(args.warmup + args.pairs):
                    order = list(samples)
                    rng.shuffle(order)  # no arm always goes first
                    for kind in order:
                        url = fixed.get(kind) or fill(path, None, theirs)
                        took, status, _ = timed(conn, method, url, headers, body)
                        if status != 404:
                            raise RuntimeError(f"{method} {path} ({kind}) answered {status}, not 404")
                        if i >= args.warmup:
                            samples[kind].append(took)
                foreign, known, fresh = samples["foreign"], samples["known"], samples["fresh"]
                rows.append(
                    (
                        f"{method} {path}",
                        statistics.median(foreign),
                        statistics.median(known),
                        *bootstrap_ci(foreign, known),
                        mann_whitney_p(foreign, known),
                        statistics.median(fresh),
                        mann_whitney_p(known, fresh),
                    )
                )
                print(f"  {method} {path}: done", file=sys.stderr)
            child.check_alive()
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n{'operation':<70} {'foreign':>8} {'known':>8} {'diff µs':>8} {'95% CI µs':>14} {'p':>6}"
        f" {'fresh':>8} {'p known/fresh':>13}"
    )
    for name, med_f, med_k, low, high, p, med_fresh, p_control in rows:
        print(
            f"{name:<70} {med_f:8.0f} {med_k:8.0f} {med_f - med_k:8.0f} {f'[{low:.0f}, {high:.0f}]':>14} {p:6.3f}"
            f" {med_fresh:8.0f} {p_control:13.3f}"
        )
    differences = [abs(r[1] - r[2]) / r[2] for r in rows]
    separated = [r[0] for r in rows if (r[3] > 0 or r[4] < 0) and r[5] < 0.01]
    control = [r[0] for r in rows if r[7] < 0.01]
    print(
        f"\n{len(rows)} operations x {args.pairs} triples: median |foreign - known| = "
        f"{statistics.median(differences):.1%} of the made-up id's time, worst {max(differences):.1%}; "
        f"foreign vs known separable (interval excludes 0, p < 0.01): {len(separated)} "
        f"({', '.join(separated) or 'none'}); "
        f"control, known vs fresh made-up id, p < 0.01: {len(control)}"
    )
    record(  # the median over operations: a single row's difference is mostly the VM's noise
        "isolation 404 timing, median |diff|",
        statistics.median(differences) * 100,
        "% of made-up id p50",
        baseline="made-up id p50",
        target="indistinguishable",
        met=not separated,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
