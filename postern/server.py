"""``postern serve``: the falcon ASGI app under gunicorn, run from Python.

gunicorn's native ``asgi`` worker was chosen by measurement (docs/design.md,
bench/serve_models.py): it served ~2.6x the requests of sync WSGI workers on a
ping and ~1.2-1.8x on a database read, and a parked ``wait_for_email`` costs a
coroutine where a WSGI worker would hold a thread or a whole process.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication

from postern.core.config import Config
from postern.core.logs import gunicorn_logconfig

log = logging.getLogger("postern.server")

#: Only the method and path: query strings may one day carry signed tokens. Every field
#: here must be one ``postern.httpconn.AccessLogger`` builds.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # postern.core.metrics.MULTIPROC_ENV, without importing it


class ApiApplication(BaseApplication):
    """gunicorn application: one ``create_app`` per worker process, nothing preloaded,
    so no database connection is ever shared across a fork."""

    def __init__(self, config: Config):
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        from postern.api.openapi import HEADER_COUNT_LIMIT, HEADER_SIZE_LIMIT, REQUEST_LINE_LIMIT

        server = self.config.server
        settings = {
            "bind": [server.bind],
            "workers": server.workers,
            # gunicorn's asgi worker with connection bounds (postern/httpconn.py).
            "worker_class": "postern.httpconn.PosternWorker",
            "keepalive": server.keepalive,
            "timeout": server.timeout,
            "graceful_timeout": server.graceful_timeout,
            "proc_name": "postern-api",
            # What /v1/openapi.json documents as 414 and 431.
            "limit_request_line": REQUEST_LINE_LIMIT,
            "limit_request_field_size": HEADER_SIZE_LIMIT,
            "limit_request_fields": HEADER_COUNT_LIMIT,
            # gunicorn 27's control socket sits at one path per user: two instances
            # on a host would fight over it, and Postern does not use it.
            "control_socket_disable": True,
            # Postern alone decides what a proxy's headers mean (server.trusted_proxies,
            # postern/api/forwarded.py): gunicorn trusts no peer's scheme headers (its
            # default trusts 127.0.0.1, and every peer of a unix socket), so req.scheme
            # is the connection's own and X-Forwarded-* reach the app untouched.
            "forwarded_allow_ips": "",
            "secure_scheme_headers": {},
            "logconfig_dict": gunicorn_logconfig(self.config.log, self.config.data_dir),
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "logger_class": "postern.httpconn.AccessLogger",
            # A worker's metrics files stay (its counters still count); its live gauges
            # (parked waiters) must not: postern/core/metrics.py.
            "child_exit": _worker_exited,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from postern.api import create_app
        from postern.core.runtime import build_postern

        app = create_app(build_postern(self.config), notice_disconnects=True)
        # Everything loaded so far lives as long as the worker: out of the collector's
        # sight, a full collection walks only what requests allocate (docs/design.md).
        # Only the young generations are collected first: a full collection would write
        # to every object inherited from the master (frozen there, see run_api) and so
        # copy their pages into this worker.
        gc.collect(1)
        gc.freeze()
        return app


def _worker_exited(server, worker) -> None:
    from postern.core import metrics

    metrics.mark_dead(worker.pid)


def run_api(config: Config) -> None:
    """Run gunicorn in this process until it is told to stop."""
    from postern.core.runtime import prepare_database

    version = prepare_database(config)
    log.info(
        "schema at version %s; starting API on %s with %s workers", version, config.server.bind, config.server.workers
    )
    # What the master holds before it forks the workers is never collected in them
    # (the Python docs' advice for pre-forking servers): a worker's full collection
    # would otherwise touch, and so un-share, every page of it.
    gc.freeze()
    ApiApplication(config).run()


def metrics_dir(config: Config) -> Path:
    """Where this installation's processes keep their metric files: in RAM (/dev/shm)
    where the system has it, else the system's temporary directory; never the data
    directory. prometheus-client maps these files into memory and grows them as metrics
    appear: on a full disk that growth is a SIGBUS that kills the process (seen in
    tests/test_faults.py), and the data disk is the one that fills. One name per user and
    data directory, so a restart finds and empties its own."""
    digest = hashlib.sha256(str(config.data_dir.resolve()).encode()).hexdigest()[:16]
    shm = Path("/dev/shm")  # noqa: S108 (a private, checked directory is made inside)
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"postern-metrics-{os.getuid()}-{digest}"


def _private_dir(path: Path) -> Path | None:
    """``path`` emptied and made 0700 for this user, or None if someone else holds the
    name (a shared /tmp or /dev/shm): then metrics stay per process rather than share a
    directory another user controls."""
    if path.is_symlink() or (path.exists() and path.stat().st_uid != os.getuid()):
        return None
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return None
    return path


def share_metrics(config: Config) -> None:
    """Give this process and every process it starts one empty metrics directory
    (``metrics_dir``, emptied: a previous run's counts would be summed in), unless a
    ``postern serve`` of the same installation above it already did (the supervisor
    starts the API as ``serve --only api``); /metrics in any API worker then sums them
    all (postern/core/metrics.py). An inherited directory of another installation (a
    test process, a wrapper) is not ours and is replaced. Call it before the first
    metric is made; gunicorn's workers inherit the variable at fork."""
    if not config.metrics.enabled:
        return
    wanted = metrics_dir(config)
    if os.environ.get(METRICS_ENV) == str(wanted):
        return
    path = _private_dir(wanted)
    if path is None:
        log.warning("metrics directory %s belongs to another user: metrics are per process", wanted)
        os.environ.pop(METRICS_ENV, None)
        return
    os.environ[METRICS_ENV] = str(path)
