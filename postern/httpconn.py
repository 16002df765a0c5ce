"""Connection bounds for the API's gunicorn ``asgi`` worker.

What gunicorn 27's asgi worker enforces by itself (read from its source, and measured):
``keepalive`` closes a connection left idle *after* a response; ``timeout`` bounds each
wait for a request body chunk; ``limit_request_*`` bound sizes. It arms no timer before
a connection's first request, and ``worker_connections`` is documented as affecting only
the gthread and gevent workers (the asgi worker counts connections and never refuses
one). So a client that connects and sends nothing, or trickles its headers a byte at a
time, held its connection for ever.

``PosternWorker`` is that worker with each connection served by ``LimitedProtocol``:
- the first request's headers must be complete within ``[server] header_timeout``
  seconds of the connection opening, however fast bytes trickle in (later requests on
  a kept-alive connection are bounded by gunicorn's own ``keepalive`` timer, which
  likewise runs from the end of the previous response and is not reset by bytes);
- a connection over ``[server] max_connections`` or ``max_connections_per_client``
  is answered 503 with the JSON error envelope and closed.
The counts are per worker process: with ``workers`` N, N times each cap is admitted.
"""

from __future__ import annotations

import json
import logging
import traceback

from gunicorn import glogging
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi
from gunicorn.workers.gasgi import ASGIWorker

from postern.api.errors import envelope
from postern.core.connlimits import ConnectionLimiter
from postern.core.deferred import after_iteration


def _refusal() -> bytes:
    body = json.dumps(
        envelope(503, "too_many_connections", "Too many open connections; try again shortly.", None)
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


REFUSAL = _refusal()


class LimitedProtocol(ASGIProtocol):
    """gunicorn's protocol, counted against the worker's limiter and given a deadline
    for its first request's headers."""

    def __init__(self, worker):
        super().__init__(worker)
        self._client: str | None = None  # the limiter's key while this connection counts
        self._refused = False
        self._header_timer = None

    def connection_made(self, transport):
        key, refused = self.worker.limiter.acquire(transport.get_extra_info("peername"))
        if refused:
            self._refused = True
            transport.write(REFUSAL)
            transport.close()
            return
        self._client = key
        super().connection_made(transport)
        self._header_timer = self.worker.loop.call_later(self.worker.header_timeout, self._headers_too_slow)

    def _on_headers_complete(self):
        self._cancel_header_timer()
        return super()._on_headers_complete()

    def _headers_too_slow(self):
        self._header_timer = None
        self._close_transport()
        if self._request_ready is not None:
            self._request_ready.set()  # the connection loop wakes, sees it closed, and ends

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data):
        if not self._refused:
            super().data_received(data)

    def eof_received(self):
        if self._refused:
            return False
        return super().eof_received()

    def _build_environ(self, request, sockname, peername):
        """gunicorn builds this dict only for the access line (and a ``post_request``
        hook, which Postern does not set: one added later gets no headers here): the
        fields ``AccessLogger.atoms`` reads, without gunicorn's copy of every request
        header (decoding them cost each woken waiter ~3 us more, in turn)."""
        return {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "REMOTE_ADDR": peername[0] if peername else "-",
        }

    def connection_lost(self, exc):
        if self._refused:
            return  # gunicorn never saw this connection: nothing of its to clean up
        self._cancel_header_timer()
        if self._client is not None:
            self.worker.limiter.release(self._client)
            self._client = None
        super().connection_lost(exc)


class PosternWorker(ASGIWorker):
    """gunicorn's ``asgi`` worker serving connections through ``LimitedProtocol``."""

    def init_process(self):
        server = self.app.config.server
        self.limiter = ConnectionLimiter("HTTP API", server.max_connections, server.max_connections_per_client)
        self.header_timeout = server.header_timeout
        # The worker builds each connection's protocol from this module-level name; this
        # process is one of our workers only, so nothing else sees the change. Tests
        # check the bounds through real sockets, so a gunicorn that stops using the
        # name fails them rather than silently dropping the bounds.
        gasgi.ASGIProtocol = LimitedProtocol
        super().init_process()


class AccessLogger(glogging.Logger):
    """gunicorn's logger, building only the fields Postern's access line prints
    (``server.ACCESS_LOG_FORMAT``). gunicorn's own ``atoms`` formats a timestamp, decodes
    any Basic credentials for ``%(u)s`` and copies every request and response header and
    the whole environ into the dict, ~12 us per request that 1,000 woken waiters pay in
    turn on one worker.

    The lines of one event-loop iteration are written after it (``core/deferred.py``):
    when a ring wakes hundreds of parked waits, the last waiter's response otherwise
    waited behind every earlier waiter's log line (a quarter of a worker's time per
    woken wait in py-spy, bench/wait_latency.py)."""

    def access(self, resp, req, environ, request_time):
        if self.access_log_enabled:
            after_iteration(self._write, self.atoms(resp, req, environ, request_time))

    def _write(self, atoms: dict) -> None:
        log = self.access_log
        try:
            if log.isEnabledFor(logging.INFO):
                # As log.info() without its walk up the stack for the caller's file and
                # line, which an access line never shows (a third of its cost).
                fmt, args = self.cfg.access_log_format, self.atoms_wrapper_class(atoms)
                log.handle(log.makeRecord(log.name, logging.INFO, "(access)", 0, fmt, (args,), None))
        except Exception:  # noqa: BLE001 -- as gunicorn's own access(): a broken line is reported, never raised
            self.error(traceback.format_exc())

    def atoms(self, resp, req, environ, request_time):
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "s": status,
            "B": getattr(resp, "sent", None),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
        }
