"""DNS queries per second: dns_builtin against NSD serving the same zone, same run.

Both servers run at once on free 127.0.0.1 ports and are measured in turn, rounds
interleaved, with Debian's ``dnsperf`` (UDP). The zone is a real tenant zone made
through the core (``postern admin dns records``), written out as a zone file for NSD.

- ``dns_builtin``: ``python -m postern service run dns`` (the process ``postern serve``
  supervises), SQLite in a temp data dir.
- ``nsd``: NSD started by this script on its own config (one server process, response
  rate limiting OFF: with it on, NSD measures its limiter, not its speed; minimal
  responses ON, as dns_builtin answers).

Before loading anything the script asks both servers every distinct query of the query
file with dnspython and compares rcode, flags and records; a difference fails the run.

    apt-get install -y dnsperf nsd        # then: systemctl stop nsd (if the package started it)
    python bench/dns_qps.py [--duration 10] [--rounds 2] [--clients 1] [--outstanding 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
from harness import Child, free_port, make_world, postern_cmd, record, running

TARGET = 0.25  # dns_builtin >= 25% of NSD's queries per second
ZONE = "bench.agents.localhost"
NESTED = f"eu.{ZONE}"


def query_lines(count: int, distinct: int, seed: int = 5) -> list[str]:
    """A query file mixing MX, TXT (SPF, DMARC, the >255-byte DKIM key), SOA, NS, NODATA
    and NXDOMAIN, over ``distinct`` different questions."""
    fixed = [
        f"{ZONE} MX",
        f"{ZONE} TXT",
        f"{ZONE} SOA",
        f"{ZONE} NS",
        f"{ZONE} A",  # NODATA
        f"_dmarc.{ZONE} TXT",
        f"postern._domainkey.{ZONE} TXT",
        f"{NESTED} MX",
        f"{NESTED} TXT",
        f"_dmarc.{NESTED} TXT",
    ]
    rng = random.Random(seed)
    wild = [f"agent{i}.{ZONE} MX" for i in range(distinct - len(fixed) - 20)]
    missing = [f"nope{i}._domainkey.{ZONE} TXT" for i in range(20)]  # NXDOMAIN
    pool = fixed + wild + missing
    # The DKIM key and the apex come up often, as they do for a mail domain's DNS.
    weights = [10] * len(fixed) + [1] * (len(wild) + len(missing))
    return rng.choices(pool, weights=weights, k=count)


def nsd_config(tmp: Path, port: int) -> Path:
    conf = tmp / "nsd.conf"
    conf.write_text(
        "server:\n"
        f"  ip-address: 127.0.0.1@{port}\n"
        f"  port: {port}\n"
        '  username: ""\n'
        '  chroot: ""\n'
        f'  zonesdir: "{tmp}"\n'
        f'  pidfile: "{tmp}/nsd.pid"\n'
        '  database: ""\n'
        f'  zonelistfile: "{tmp}/zone.list"\n'
        f'  xfrdfile: "{tmp}/xfrd.state"\n'
        f'  xfrdir: "{tmp}"\n'
        f'  logfile: "{tmp}/nsd.log"\n'
        "  server-count: 1\n"
        "  verbosity: 0\n"
        "  rrl-ratelimit: 0\n"
        "  rrl-whitelist-ratelimit: 0\n"
        # No NS RRset in the authority section of positive answers: dns_builtin sends
        # minimal responses, so NSD does the same work (and its answers compare equal).
        "  minimal-responses: yes\n"
        "remote-control:\n"
        "  control-enable: no\n"
        "zone:\n"
        f"  name: {ZONE}\n"
        "  zonefile: bench.zone\n"
    )
    return conf


def wait_dns(child: Child, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=0.5)
            return
        except (OSError, dns.exception.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"{child.name}: no answer on :{port} within {timeout}s:\n{child.tail()}")


def answers_of(port: int, name: str, rtype: str) -> tuple:
    response = dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1", port=port, timeout=2)
    flags = response.flags & (dns.flags.AA | dns.flags.TC | dns.flags.QR)

    def section(rrsets):
        return sorted((r.name.to_text().lower(), r.rdtype, r.ttl, sorted(rd.to_text() for rd in r)) for r in rrsets)

    return response.rcode(), flags, section(response.answer), section(response.authority)


def dnsperf(args, port: int, datafile: Path) -> tuple[float, int]:
    """Queries per second and queries lost, from one dnsperf run."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-l", str(args.duration)]
    cmd += ["-c", str(args.clients), "-q", str(args.outstanding)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not qps:
        raise RuntimeError(f"dnsperf printed no rate:\n{out}")
    return float(qps.group(1)), int(lost.group(1)) if lost else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--queries", type=int, default=1000, help="lines in the query file")
    parser.add_argument("--distinct", type=int, default=200, help="different questions among them")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    for tool in ("dnsperf", "nsd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y dnsperf nsd")

    tmp = Path(tempfile.mkdtemp(prefix="postern-dns-bench-"))
    postern_port, nsd_port = free_port(), free_port()
    world = make_world(tmp, config_extra=f'[dns.dns_builtin]\nbind = "127.0.0.1:{postern_port}"\n')
    _add_nested_domain(world)
    zone_text = subprocess.run(
        postern_cmd("admin", "dns", "records", ZONE), env=world.env(), capture_output=True, text=True, check=True
    ).stdout
    (tmp / "bench.zone").write_text(zone_text)
    datafile = tmp / "queries.txt"
    lines = query_lines(args.queries, args.distinct)
    datafile.write_text("\n".join(lines) + "\n")

    print(f"# {platform.node()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}")
    help_text = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    version = re.search(r"Version (\S+)", help_text.stdout + help_text.stderr)
    print(f"# dnsperf {version.group(1) if version else '(version unknown)'}")
    print(f"# {subprocess.run(['nsd', '-v'], capture_output=True, text=True).stderr.splitlines()[0]}")
    print(f"# {len(lines)} queries, {len(set(lines))} distinct; dnsperf -c {args.clients} -q {args.outstanding}")

    postern = Child("dns_builtin", postern_cmd("service", "run", "dns"), tmp / "postern.log", env=world.env())
    nsd = Child("nsd", ["nsd", "-d", "-c", str(nsd_config(tmp, nsd_port))], tmp / "nsd.log.stderr")
    results: dict[str, list[tuple[float, int]]] = {"dns_builtin": [], "nsd": []}
    with running(postern), running(nsd):
        wait_dns(postern, postern_port)
        wait_dns(nsd, nsd_port)
        differ = []
        for line in sorted(set(lines)):
            name, rtype = line.split()
            ours, theirs = answers_of(postern_port, name, rtype), answers_of(nsd_port, name, rtype)
            if ours != theirs:
                differ.append((line, ours, theirs))
        print(f"# answers compared: {len(set(lines))} questions, {len(differ)} differ")
        for line, ours, theirs in differ[:5]:
            print(f"#   {line}\n#     dns_builtin {ours}\n#     nsd         {theirs}")
        if differ:
            return 1
        for round_no in range(args.rounds):
            for name, port in (("dns_builtin", postern_port), ("nsd", nsd_port)):
                qps, lost = dnsperf(args, port, datafile)
                results[name].append((qps, lost))
                print(f"round {round_no + 1}: {name:12} {qps:>10,.0f} q/s  lost {lost}", file=sys.stderr)

    medians = {name: statistics.median(q for q, _ in runs) for name, runs in results.items()}
    ratios = [ours[0] / theirs[0] for ours, theirs in zip(results["dns_builtin"], results["nsd"], strict=True)]
    print(f"{'server':12} {'q/s':>10} {'min-max':>17} {'lost':>5}")
    for name, runs in results.items():
        spread = f"{min(q for q, _ in runs):,.0f}-{max(q for q, _ in runs):,.0f}"
        print(f"{name:12} {medians[name]:>10,.0f} {spread:>17} {sum(lost for _, lost in runs):>5}")
    ratio = medians["dns_builtin"] / medians["nsd"]
    print(f"dns_builtin / nsd: {ratio:.0%} (per round: {', '.join(f'{r:.0%}' for r in ratios)})")
    record("DNS, q/s", medians["dns_builtin"], "q/s", "NSD", medians["nsd"], f">= {TARGET:.0%}", ratio >= TARGET)
    print(f"target >= {TARGET:.0%} of NSD: {'met' if ratio >= TARGET else 'NOT met'}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"# kept {tmp}")
    return 0


def _add_nested_domain(world) -> None:
    """An enrollment allowing a nested domain, so the zone has one (MX, SPF, DMARC there too)."""
    from postern.core import enrollment
    from postern.core.db import database
    from postern.core.models import Customer
    from postern.core.principal import CLI, RequestInfo

    with database.connection_context():
        customer = Customer.get(Customer.label == "bench")
        enrollment.create_enrollment_key(
            CLI,
            RequestInfo(),
            customer,
            base_domain="agents.localhost",
            scopes=["mailbox:read"],
            max_mailboxes=1,
            expires_in=dt.timedelta(days=1),
            domains=[NESTED],
        )
    database.close()


if __name__ == "__main__":
    sys.exit(main())
