"""Prometheus metrics: every metric object Postern records, in one place.

Hot paths do one ``.inc()`` or ``.observe()`` on these. This module imports only
``prometheus_client`` (and the standard library), so anything in the core may use it.

Across processes: ``postern serve`` gives every child ``PROMETHEUS_MULTIPROC_DIR``
(``postern.server.metrics_dir``: in /dev/shm, never on the data disk; emptied at each
start), which puts the client in its multiprocess mode: each process writes its values
to files there, and ``GET /metrics`` in any API worker sums them (``collect``). Without
that variable (tests in one process, a ``postern`` command) the values live in this
process's default registry.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client import generate_latest as _generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Seconds buckets for request and ingest latencies (5 ms to 30 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The route label of a request no route matched (a 404): one value, whatever the path.
UNMATCHED = "<unmatched>"

# Each metric is made on first use (module ``__getattr__``), not at import: the
# ``postern`` command imports this module before ``postern serve`` sets
# PROMETHEUS_MULTIPROC_DIR, and gunicorn's workers, forked from that process, must make
# their metrics in multiprocess mode. Once made, a metric is a plain module attribute.
_SPECS = {
    # -- API --------------------------------------------------------------------------
    "API_REQUESTS": (
        Counter,
        "postern_api_requests",
        "API requests answered, by route template, method and status class (2xx, 4xx, ...).",
        ["route", "method", "status"],
        {},
    ),
    "API_LATENCY": (
        Histogram,
        "postern_api_request_duration_seconds",
        "Seconds from a request's arrival to its response, by route template.",
        ["route"],
        {"buckets": LATENCY_BUCKETS},
    ),
    "RATE_LIMITED": (
        Counter,
        "postern_rate_limited",
        "Requests refused with 429 by a rate limit, by the limit's name (docs/limits.md).",
        ["limit"],
        {},
    ),
    "DATABASE_ERRORS": (
        Counter,
        "postern_database_errors",
        "Database faults the API answered with 503, by kind (database_unavailable, storage_full).",
        ["kind"],
        {},
    ),
    # -- SMTP listener ------------------------------------------------------------------
    "SMTP_SESSIONS": (
        Counter,
        "postern_smtp_sessions",
        "SMTP sessions opened (not counting those refused at connect).",
        [],
        {},
    ),
    "SMTP_ACCEPTED": (Counter, "postern_smtp_messages_accepted", "Messages answered 250 at DATA.", [], {}),
    "SMTP_REFUSED": (
        Counter,
        "postern_smtp_refused",
        "SMTP refusals, by stage (connect, mail, rcpt, data), code class (4xx, 5xx) and short reason.",
        ["stage", "code", "reason"],
        {},
    ),
    "SMTP_INGEST_LATENCY": (
        Histogram,
        "postern_smtp_ingest_duration_seconds",
        "Seconds from the end of a message's DATA to its 250 (parse, checks, commit).",
        [],
        {"buckets": LATENCY_BUCKETS},
    ),
    # -- Outbound mail, webhooks, DNS ---------------------------------------------------
    "OUTBOUND": (
        Counter,
        "postern_outbound_deliveries",
        "Outcomes of outbound delivery attempts: sent, captured, failed (for good), retried.",
        ["outcome"],
        {},
    ),
    "WEBHOOK_DELIVERIES": (
        Counter,
        "postern_webhook_deliveries",
        "Webhook delivery attempts recorded: succeeded, retried (to be tried again), failed (for good).",
        ["outcome"],
        {},
    ),
    "DNS_QUERIES": (
        Counter,
        "postern_dns_queries",
        "DNS queries answered by the built-in server, by transport and rcode (dropped: no reply).",
        ["transport", "rcode"],
        {},
    ),
    # -- wait_for_email -------------------------------------------------------------------
    "WAITERS": (
        Gauge,
        "postern_waiters_parked",
        "wait_for_email / wait_for_code calls parked now, over all API workers.",
        [],
        {"multiprocess_mode": "livesum"},
    ),
    "WAKE_LATENCY": (
        Histogram,
        "postern_wait_wake_duration_seconds",
        "Seconds from a doorbell ring reaching a worker to the woken waiter's answer.",
        [],
        {"buckets": (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)},
    ),
}
_making = threading.Lock()
_value_class_checked = False

if TYPE_CHECKING:  # what __getattr__ makes, for readers and type checkers
    API_REQUESTS: Counter
    API_LATENCY: Histogram
    RATE_LIMITED: Counter
    DATABASE_ERRORS: Counter
    SMTP_SESSIONS: Counter
    SMTP_ACCEPTED: Counter
    SMTP_REFUSED: Counter
    SMTP_INGEST_LATENCY: Histogram
    OUTBOUND: Counter
    WEBHOOK_DELIVERIES: Counter
    DNS_QUERIES: Counter
    WAITERS: Gauge
    WAKE_LATENCY: Histogram


def __getattr__(name: str):
    spec = _SPECS.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _value_class_checked
    with _making:
        made = globals().get(name)
        if made is not None:
            return made
        if not _value_class_checked:
            # prometheus_client picked its value class when it was imported, perhaps
            # before the variable was set: pick again, as it would now.
            values.ValueClass = values.get_value_class()
            _value_class_checked = True
        kind, metric, documentation, labels, options = spec
        made = kind(metric, documentation, labels, **options)
        globals()[name] = made
        return made


def make_all() -> None:
    """Make every metric now (a scrape lists them all, at zero until used)."""
    for name in _SPECS:
        __getattr__(name)


DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


def dns_rcode(reply: bytes | None) -> str:
    """The label of a DNS reply's rcode (None: the query was dropped)."""
    if reply is None:
        return "dropped"
    code = reply[3] & 0x0F if len(reply) > 3 else -1
    return DNS_RCODES[code] if 0 <= code < len(DNS_RCODES) else "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_dead(pid: int, path: str | None = None) -> None:
    """A process that wrote metrics has exited: its live gauges stop counting."""
    path = path or multiprocess_dir()
    if path:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, path)


def sweep_dead(path: str | None = None) -> None:
    """``mark_dead`` every process whose live-gauge file is still there but which is gone
    (a worker killed with its arbiter, a listener process killed with its service)."""
    path = path or multiprocess_dir()
    if not path:
        return
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = name.rsplit("_", 1)[1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # another scrape may be removing it too
                multiprocess.mark_process_dead(int(pid), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def generate_latest() -> bytes:
    """The text exposition of every process's metrics (or this process's alone)."""
    make_all()
    path = multiprocess_dir()
    if path is None:
        return _generate_latest(REGISTRY)
    sweep_dead(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return _generate_latest(registry)
