"""``postern serve``: the falcon ASGI app under gunicorn, run from Python.

gunicorn's native ``asgi`` worker was chosen by measurement (docs/design.md,
bench/serve_models.py): it served ~2.6x the requests of sync WSGI workers on a
ping and ~1.2-1.8x on a database read, and a parked ``wait_for_email`` costs a
coroutine where a WSGI worker would hold a thread or a whole process.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from postern.core.config import Config
from postern.core.logs import gunicorn_logconfig

log = logging.getLogger("postern.server")


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
            "logconfig_dict": gunicorn_logconfig(self.config.log.level, self.config.log.format),
            "accesslog": "-",
            # Only the method and path: query strings may one day carry signed tokens.
            "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms',
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from postern.api import create_app
        from postern.core.runtime import build_postern

        return create_app(build_postern(self.config), notice_disconnects=True)


def run_api(config: Config) -> None:
    """Run gunicorn in this process until it is told to stop."""
    from postern.core.runtime import prepare_database

    version = prepare_database(config)
    log.info(
        "schema at version %s; starting API on %s with %s workers", version, config.server.bind, config.server.workers
    )
    ApiApplication(config).run()
