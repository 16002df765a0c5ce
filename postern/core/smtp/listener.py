"""Serving the SMTP listener: ``run_listener`` binds, serves until SIGTERM, and with
``processes`` above 1 forks that many processes onto one socket (``prefork``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from postern.core.connlimits import ConnectionLimiter
from postern.core.db import DatabaseRunner, GroupCommitter, database
from postern.core.services import notify_ready
from postern.core.smtp.options import ListenerOptions
from postern.core.smtp.prefork import serve_forked
from postern.core.smtp.session import Handler, OnMessage, smtp_session
from postern.core.smtp.tls import ReloadingContext

log = logging.getLogger("postern.smtp")


def run_listener(postern, options: ListenerOptions, on_message: OnMessage) -> None:
    """Serve SMTP on ``options.bind`` until SIGTERM, each accepted message handed to
    ``on_message`` (a receive backend's service entry point calls this).

    With ``processes`` above 1 the address is bound here once and served by that many
    forked processes (``prefork``), each with its own loop, database threads and group
    committer: parsing MIME is CPU work that one process does on one core."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if options.processes <= 1:
        asyncio.run(_serve(postern, options, on_message))
        return
    sockets = _bind(options.bind)
    database.close()  # each child opens its own: a connection must never be shared by two processes
    log.info("SMTP listening on %s in %d processes", options.bind, options.processes)
    serve_forked(sockets, options.processes, lambda socks: asyncio.run(_serve(postern, options, on_message, socks)))


def _bind(bind: str) -> list[socket.socket]:
    """Listening sockets for ``host:port``, as ``loop.create_server`` would bind them: one
    per address the host resolves to, IPv6 ones IPv6-only. Fails if the port is taken."""
    host, _, port = bind.rpartition(":")
    infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _serve(
    postern, options: ListenerOptions, on_message: OnMessage, sockets: list[socket.socket] | None = None
) -> None:
    # aiosmtpd logs every command at INFO: a dozen lines per message, a measurable cost.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().level))
    runner = DatabaseRunner(options.threads)
    committer = GroupCommitter()
    handler = Handler(postern, options, on_message, runner, committer)
    limit = postern.config.mail.max_message_bytes
    loop = asyncio.get_running_loop()

    # Per process: with ``processes`` N the listener admits N times these caps.
    limiter = ConnectionLimiter("SMTP", options.max_connections, options.max_connections_per_client)
    # Checked at each connection: a renewed certificate is served without a restart.
    tls = ReloadingContext(options.tls_cert, options.tls_key) if options.tls_cert else None

    def session():
        return smtp_session(
            handler,
            options.hostname,
            limit,
            limiter=limiter,
            command_timeout=options.command_timeout,
            data_timeout=options.data_timeout,
            tls_context=tls.current() if tls is not None else None,
            require_tls=options.require_tls,
        )

    if sockets is None:
        host, _, port = options.bind.rpartition(":")
        servers = [await loop.create_server(session, host.strip("[]"), int(port))]
    else:
        servers = [await loop.create_server(session, sock=sock) for sock in sockets]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "SMTP listening on %s (max %s bytes, %s recipients, STARTTLS %s)",
        options.bind,
        limit,
        options.max_recipients,
        ("required" if options.require_tls else "offered") if tls is not None else "off",
    )
    notify_ready()  # the loop greets from here on: the supervisor counts the port as served
    await stop.wait()
    for server in servers:
        server.close()
    for server in servers:
        await server.wait_closed()
    committer.shutdown()
    runner.shutdown()
