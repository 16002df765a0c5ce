"""Measure the serving models Postern could use, in one run on this machine.

Starts, one at a time on 127.0.0.1, gunicorn with the falcon apps in
bench/model_apps.py under ``-k asgi``, ``-k sync`` and ``-k gthread``, then the real
``postern serve --only api``; loads each endpoint with wrk (or a Python fallback)
and prints requests/s and the ratio to the WSGI sync baseline of the same run.
Relative numbers are the point: absolute ones depend on the machine, and the load
generator shares its CPUs with the server. See bench/README.md.

    python bench/serve_models.py [--duration 5] [--rounds 2] [--connections 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gunicorn
import model_apps  # bench/ is sys.path[0] when run as a script; seeds the database
from harness import record

BENCH_DIR = Path(__file__).resolve().parent

BASELINE = "wsgi sync"


@dataclass
class Server:
    name: str
    cmd: list[str]
    endpoints: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def free_port() -> int:
    # The kernel picks an unused port; the tiny race until gunicorn binds it is acceptable here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(args, tmp: Path) -> list[Server]:
    # "{bind}" is filled in with a fresh port when each server starts.
    gunicorn_cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        str(BENCH_DIR),
        "-w",
        str(args.workers),
        "-b",
        "{bind}",
        "--graceful-timeout",
        "5",
        "--no-control-socket",
    ]
    env = {"BENCH_DB": str(tmp / "bench.db")}
    model_endpoints = ["/ping", "/db"]
    result = [
        Server("asgi", [*gunicorn_cmd, "-k", "asgi", "model_apps:asgi_app"], model_endpoints, env),
        Server(BASELINE, [*gunicorn_cmd, "-k", "sync", "model_apps:wsgi_app"], model_endpoints, env),
        Server(
            f"wsgi gthread x{args.gthreads}",
            [*gunicorn_cmd, "-k", "gthread", "--threads", str(args.gthreads), "model_apps:wsgi_app"],
            model_endpoints,
            env,
        ),
    ]
    if not args.skip_postern:
        data = tmp / "postern-data"
        postern_env = {
            "POSTERN_DATA_DIR": str(data),
            "POSTERN_SERVER_BIND": "{bind}",
            "POSTERN_SERVER_WORKERS": str(args.workers),
            "POSTERN_SERVER_GRACEFUL_TIMEOUT": "5",
        }
        # cwd is the temp dir so no ./postern.toml is picked up; POSTERN_CONFIG is dropped in running().
        result.append(
            Server(
                "postern (asgi)",
                [sys.executable, "-m", "postern", "serve", "--only", "api"],
                ["/healthz"],
                postern_env,
                cwd=tmp,
            )
        )
    return result


@contextlib.contextmanager
def running(server: Server, port: int, log_path: Path):
    bind = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "POSTERN_CONFIG"}
    env.update({k: v.format(bind=bind) for k, v in server.env.items()})
    cmd = [part.format(bind=bind) for part in server.cmd]
    with open(log_path, "wb") as log:
        # Own session, so stopping it reaches the arbiter and every worker it forked.
        proc = subprocess.Popen(
            cmd, env=env, cwd=server.cwd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
        )
    try:
        wait_ready(proc, port, server.endpoints[0], log_path)
        yield
    finally:
        stop(proc)


def wait_ready(proc: subprocess.Popen, port: int, path: str, log_path: Path, timeout: float = 30) -> None:
    """Until a real request gets a 200: the port alone opens before any worker is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"no 200 from :{port}{path} within {timeout}s:\n{log_path.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group (graceful gunicorn shutdown), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers may outlive the arbiter by a moment; the group is empty once killpg fails.
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# ---- load generation ---------------------------------------------------------


def wrk_load(port: int, path: str, seconds: int, connections: int, threads: int) -> tuple[float, int]:
    """(requests/s, errors) from one wrk run."""
    url = f"http://127.0.0.1:{port}{path}"
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # wrk counts non-2xx responses in Requests/sec, so report them next to it.
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    errors = sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0
    return rps, errors + (int(non2xx.group(1)) if non2xx else 0)


async def _connection(host: str, port: int, path: str, until: float, counts: list[int]) -> None:
    """One keep-alive HTTP/1.1 client; reconnects when the server closes (sync workers do)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader = writer = None
    while time.monotonic() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            counts[0 if head[9:10] == b"2" else 1] += 1
            if re.search(rb"(?i)connection:\s*close", head):
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, AttributeError):  # AttributeError: no Content-Length
            counts[1] += 1
            writer = None
    if writer is not None:
        writer.close()


def _load_process(host, port, path, seconds, connections) -> list[int]:
    async def main():
        counts = [0, 0]
        until = time.monotonic() + seconds
        await asyncio.gather(*(_connection(host, port, path, until, counts) for _ in range(connections)))
        return counts

    return asyncio.run(main())


def python_load(port: int, path: str, seconds: int, connections: int, threads: int) -> tuple[float, int]:
    """Same contract as wrk_load. One asyncio loop per process, as wrk runs one per thread."""
    per = [connections // threads + (i < connections % threads) for i in range(threads)]
    with ProcessPoolExecutor(threads) as pool:
        results = list(
            pool.map(
                _load_process, ["127.0.0.1"] * threads, [port] * threads, [path] * threads, [seconds] * threads, per
            )
        )
    return sum(r[0] for r in results) / seconds, sum(r[1] for r in results)


# ---- main --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per endpoint and round [5]")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first [1]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all servers; the median is shown [2]")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections [32]")
    parser.add_argument("--threads", type=int, default=2, help="load generator threads/processes [2]")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes per server [2]")
    parser.add_argument("--gthreads", type=int, default=4, help="threads per gthread worker [4]")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--skip-postern", action="store_true", help="only the model apps")
    args = parser.parse_args()

    use_wrk = shutil.which("wrk") and not args.python_load
    load = wrk_load if use_wrk else python_load
    loader = "wrk" if use_wrk else "python asyncio load generator (wrk not on PATH; numbers are capped by Python)"

    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"gunicorn {gunicorn.__version__} | load: {loader}"
    )
    print(
        f"# {args.connections} connections, {args.threads} load threads, {args.duration}s per endpoint "
        f"after {args.warmup}s warm-up, {args.rounds} round(s), {args.workers} workers per server",
        flush=True,
    )

    # (server, endpoint) -> one (req/s, errors) per round. Rounds interleave the servers,
    # so a slow spell on a shared machine hits all of them rather than one.
    samples: dict[tuple[str, str], list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model_apps.seed(str(tmp / "bench.db"))
        for round_no in range(1, args.rounds + 1):
            for server in servers(args, tmp):
                port = free_port()
                with running(server, port, tmp / f"{server.name.split()[0]}-{port}.log"):
                    for endpoint in server.endpoints:
                        # Warm-up: lets every worker boot, open its connection and fill caches.
                        if args.warmup:
                            load(port, endpoint, args.warmup, args.connections, args.threads)
                        rps, errors = load(port, endpoint, args.duration, args.connections, args.threads)
                        samples.setdefault((server.name, endpoint), []).append((rps, errors))
                        print(
                            f"  round {round_no}: {server.name:<18} {endpoint:<9} {rps:>8,.0f} req/s", file=sys.stderr
                        )

    median = {key: statistics.median(rps for rps, _ in runs) for key, runs in samples.items()}
    print(f"\n{'server':<18} {'endpoint':<9} {'req/s':>8} {'min-max':>14} {'vs sync':>8} {'errors':>6}  note")
    for (name, endpoint), runs in samples.items():
        # /healthz has no sync twin; /db (one indexed read) is the nearest baseline.
        base_endpoint = endpoint if (BASELINE, endpoint) in median else "/db"
        base = median.get((BASELINE, base_endpoint))
        ratio = f"{median[name, endpoint] / base:.2f}x" if base else "-"
        spread = f"{min(r for r, _ in runs):,.0f}-{max(r for r, _ in runs):,.0f}"
        note = f"vs sync {base_endpoint}" if base_endpoint != endpoint else ""
        errors = sum(e for _, e in runs)
        print(f"{name:<18} {endpoint:<9} {median[name, endpoint]:>8,.0f} {spread:>14} {ratio:>8} {errors:>6}  {note}")
        if name != BASELINE:
            record(f"{name} {endpoint}, req/s", median[name, endpoint], "req/s", f"{BASELINE} {base_endpoint}", base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
