"""Run every benchmark in bench/ and print one table: figure, same-run baseline, ratio, target.

    python -m bench                 # every benchmark with its defaults (~10 minutes)
    python -m bench --quick         # shorter runs of the same (~3 minutes); for a smoke check
    python -m bench --only smtp_ingest,list_growth
    python -m bench -- --sizes 1000,10000,100000,1000000   # extra flags go to list_growth

Each benchmark is its own script (see bench/README.md), run here as a child process in
turn; each hands its figures back through ``harness.record`` (a JSON-lines file named
by $POSTERN_BENCH_RESULTS). A benchmark whose tools are missing, or that fails, is
listed under the table with the reason and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import BENCH_DIR, RESULTS_ENV

# name -> (flags for --quick, what it needs on PATH). The order puts the quick ones first.
BENCHMARKS = {
    "list_growth": (["--sizes", "1000,10000", "--requests", "50"], []),
    "console_pages": (["--sizes", "1000,10000", "--requests", "30"], []),
    "list_throughput": (["--duration", "2", "--warmup", "1", "--rounds", "1"], ["wrk"]),
    "list_breakdown": (["--repeat", "50"], []),
    "wait_latency": (["--waiters", "20", "--rounds", "5", "--baseline", "100"], []),
    "park_floor": (["--waiters", "200", "--rounds", "1"], []),
    "smtp_ingest": (["--messages", "300", "--warmup", "50", "--rounds", "1"], ["smtp-source", "smtp-sink"]),
    "extraction": (["--repeat", "5"], []),
    "html_to_text": (["--repeat", "3"], []),
    "extraction_ingest": (["--messages", "300", "--warmup", "30", "--rounds", "1"], ["smtp-source"]),
    "verify_ingest": (["--messages", "300", "--warmup", "30", "--rounds", "1", "--samples", "100"], ["smtp-source"]),
    "webhooks": (["--deliveries", "200", "--messages", "30"], []),
    "dns_qps": (["--duration", "3", "--rounds", "1"], ["dnsperf", "nsd"]),
    "serve_models": (["--duration", "2", "--warmup", "1", "--rounds", "1"], []),
    "mcp_tools": (["--duration", "2", "--rounds", "5"], []),
    "agent_code_task": (["--runs", "5"], []),
    "load_agents": (["--agents", "50", "--duration", "10"], []),
    "crash_consistency": (["--kills", "3"], []),
    "isolation_timing": (["--pairs", "40", "--warmup", "5"], []),
    "slow_clients": (["--requests", "30", "--slow", "300"], []),
    "limits_storage": (["--seconds", "1"], []),
    "limits_overhead": (["--duration", "2", "--rounds", "1"], ["wrk"]),
    "outbound_delivery": (["--messages", "300", "--rounds", "1"], ["smtp-source", "smtp-sink"]),
}
INSTALL_HINT = "apt-get install -y wrk postfix dnsperf nsd (then: postfix stop)"


def run_one(name: str, flags: list[str], results: Path, log_dir: Path) -> tuple[int, str, float]:
    """Run ``bench/<name>.py``; returns (exit status, last line of its output, seconds)."""
    env = {**os.environ, RESULTS_ENV: str(results)}
    log = log_dir / f"{name}.log"
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run([sys.executable, str(BENCH_DIR / f"{name}.py"), *flags], env=env, stdout=out, stderr=out)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return proc.returncode, (lines[-1] if lines else ""), time.monotonic() - start


def missing_tools(tools: list[str]) -> list[str]:
    import shutil

    return [tool for tool in tools if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


def table(rows: list[dict]) -> str:
    head = f"{'figure':<36} {'value':>18}  {'baseline (same run)':<24} {'baseline':>12} {'ratio':>7}  target"
    out = [head, "-" * len(head)]
    for row in rows:
        unit = row["unit"]
        value = f"{row['value']:,.2f} {unit}" if row["value"] < 100 else f"{row['value']:,.0f} {unit}"
        base = row["baseline_value"]
        base_text = "" if base is None else (f"{base:,.2f}" if base < 100 else f"{base:,.0f}")
        ratio = f"{row['value'] / base:.2f}x" if base else ""
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        target = f"{row['target']} {met}".strip()
        out.append(f"{row['figure']:<36} {value:>18}  {row['baseline']:<24} {base_text:>12} {ratio:>7}  {target}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs of every benchmark (a smoke check)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--logs", help="keep each benchmark's output in this directory")
    parser.add_argument("extra", nargs="*", help="after --: flags passed to list_growth")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    log_dir = Path(args.logs or tempfile.mkdtemp(prefix="postern-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results = log_dir / "results.jsonl"
    results.write_text("")
    problems = []
    for name in names:
        quick_flags, tools = BENCHMARKS[name]
        absent = missing_tools(tools)
        if absent:
            problems.append(f"{name}: skipped, {', '.join(absent)} not installed ({INSTALL_HINT})")
            print(f"- {name}: skipped ({', '.join(absent)} missing)", file=sys.stderr, flush=True)
            continue
        flags = (quick_flags if args.quick else []) + (args.extra if name == "list_growth" else [])
        print(f"- {name} {' '.join(flags)}", file=sys.stderr, flush=True)
        status, last, took = run_one(name, flags, results, log_dir)
        print(f"  done in {took:.0f}s, exit {status}", file=sys.stderr, flush=True)
        if status:
            problems.append(f"{name}: exit {status}: {last} (log: {log_dir / (name + '.log')})")

    rows = [json.loads(line) for line in results.read_text().splitlines() if line]
    print(f"\nPostern benchmarks{' (--quick)' if args.quick else ''}; logs in {log_dir}\n")
    print(table(rows))
    for problem in problems:
        print(f"! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
