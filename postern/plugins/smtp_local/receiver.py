"""The SMTP listener: RCPT checked against the core, DATA stored before 250."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from collections.abc import Mapping
from typing import Any

import peewee

from postern.core.backends import InboxRef, Receiver
from postern.core.connlimits import TOTAL, ConnectionLimiter
from postern.core.db import FAULT_FULL, DatabaseRunner, GroupCommitter, database, database_fault
from postern.core.mail.ingest import (
    MailRejected,
    announce,
    limits_for,
    local_inbox,
    readable,
    storable_address,
    store,
)
from postern.core.mail.mime import parse
from postern.core.prefork import serve_forked
from postern.core.services import notify_ready

log = logging.getLogger("postern.smtp")

DEFAULT_BIND = "127.0.0.1:2525"
MAX_PROCESSES = 64
#: Seconds a client has to send each command (aiosmtpd's timer restarts at each valid
#: command, not at each byte, so trickling a command slowly does not extend it).
DEFAULT_COMMAND_TIMEOUT = 60
#: Seconds a client has, after DATA, to send the whole message.
DEFAULT_DATA_TIMEOUT = 300
#: Open sessions per listener process, in total and per client address (IPv6: per /64).
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 50
TOO_MANY_TOTAL = b"421 4.7.0 Too many connections, try again later\r\n"
TOO_MANY_FROM_CLIENT = b"421 4.7.0 Too many connections from your address, try again later\r\n"


class SmtpLocalReceiver(Receiver):
    """Inboxes live in the core's database, so the listener needs no provisioning:
    an address is receivable from the moment its inbox row commits."""

    name = "smtp_local"
    description = "SMTP listener (aiosmtpd); inboxes stored in Postern's database"
    OPTIONS = {
        "bind": str,
        "hostname": str,
        "max_recipients": int,
        "threads": int,
        "processes": int,
        "command_timeout": int,
        "data_timeout": int,
        "max_connections": int,
        "max_connections_per_client": int,
    }

    def __init__(
        self,
        bind: str = DEFAULT_BIND,
        hostname: str = "postern.localhost",
        max_recipients: int = 100,
        threads: int = 4,
        processes: int = 1,
        command_timeout: int = DEFAULT_COMMAND_TIMEOUT,
        data_timeout: int = DEFAULT_DATA_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    ):
        self.bind, self.hostname, self.max_recipients, self.threads = bind, hostname, max_recipients, threads
        self.processes = processes
        self.command_timeout, self.data_timeout = command_timeout, data_timeout
        self.max_connections, self.max_connections_per_client = max_connections, max_connections_per_client

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SmtpLocalReceiver:
        for key, value in options.items():
            kind = cls.OPTIONS.get(key)
            if kind is None:
                raise ValueError(f"unknown option '{key}'; known: {', '.join(cls.OPTIONS)}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"'{key}' must be a {kind.__name__}")
        receiver = cls(**options)
        host, _, port = receiver.bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bind must be host:port, got '{receiver.bind}'")
        if receiver.max_recipients < 1:
            raise ValueError("max_recipients must be at least 1")
        if not 1 <= receiver.processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be from 1 to {MAX_PROCESSES}")
        if receiver.command_timeout < 1 or receiver.data_timeout < 1:
            raise ValueError("command_timeout and data_timeout must be at least 1 second")
        if receiver.max_connections < 1 or receiver.max_connections_per_client < 1:
            raise ValueError("max_connections and max_connections_per_client must be at least 1")
        return receiver

    def provision(self, inbox: InboxRef) -> None:
        """Nothing to do: RCPT TO is answered from the inbox table."""

    def deprovision(self, inbox: InboxRef) -> None:
        """Nothing to do: a deleted inbox's address is refused at RCPT from then on."""


class Handler:
    """aiosmtpd handler. Lookups and parsing run on a small thread pool, off the loop;
    stores go through a group committer, so concurrent sessions share one commit."""

    def __init__(self, postern, receiver: SmtpLocalReceiver, runner: DatabaseRunner, committer: GroupCommitter):
        self.postern = postern
        self.receiver = receiver
        self.runner = runner
        self.committer = committer
        self.limits = limits_for(postern)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.receiver.max_recipients:
            return "452 4.5.3 Too many recipients"
        if not storable_address(address.strip()):
            return "553 5.1.3 Invalid mailbox address"
        try:
            known = await self.runner.run(local_inbox, address)
        except peewee.PeeweeException as exc:
            log.warning("RCPT %s: database unavailable: %s", address, exc)
            return "451 4.3.0 Temporary failure, try again later"
        if known is None:
            return "550 5.1.1 No such mailbox here"
        if not hasattr(envelope, "postern_inboxes"):
            envelope.postern_inboxes = {}
        envelope.postern_inboxes[address.strip().lower()] = known
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        try:
            parsed = await self.runner.run(parse, raw, self.limits)
        except MailRejected as exc:
            log.info("refused a message from %s: %s", envelope.mail_from, exc.message)
            return f"{exc.smtp_code} {exc.message}"
        except Exception:
            # Parsing depends on the bytes alone: a retry would fail the same way, so a
            # 4xx here would have the sender resend a poison message forever.
            log.exception("could not parse a message from %s; refused it for good", envelope.mail_from)
            return "554 5.6.0 Message could not be parsed"
        # Outside the group commit: deriving text and finding codes is CPU work that
        # must not hold the write lock.
        reading = await self.runner.run(readable, self.postern, parsed, envelope.mail_from or "")
        try:
            stored = await self.committer.run(
                store,
                self.postern,
                parsed,
                raw,
                envelope.mail_from or "",
                envelope.rcpt_tos,
                getattr(envelope, "postern_inboxes", None),
                None,
                reading,
                after=lambda messages: announce(self.postern, messages),
            )
        except MailRejected as exc:
            log.info("refused a message from %s: %s", envelope.mail_from, exc.message)
            return f"{exc.smtp_code} {exc.message}"
        except Exception as exc:  # anything unforeseen: the sender must retry, never lose it
            fault = database_fault(exc)
            if fault is not None and fault.kind == FAULT_FULL:  # RFC 3463 4.3.1: the sender keeps it, retries
                log.warning("out of storage; answered 452 to %s: %s", envelope.mail_from, fault.error)
                return "452 4.3.1 Insufficient system storage, try again later"
            if fault is not None:
                log.warning("database unavailable; answered 451 to %s: %s", envelope.mail_from, fault.error)
            else:
                log.exception("could not store a message from %s; answered 451", envelope.mail_from)
            return "451 4.3.0 Temporary failure storing the message, try again later"
        return f"250 2.0.0 OK stored as {' '.join(m.id for m in stored)}"


def smtp_session(
    handler,
    hostname: str,
    data_size_limit: int,
    *,
    limiter: ConnectionLimiter | None = None,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    data_timeout: float = DEFAULT_DATA_TIMEOUT,
):
    """One connection's aiosmtpd protocol, as the listener serves it (the fuzzers too).
    A fixed hostname: aiosmtpd otherwise calls socket.getfqdn() per connection.
    ``limiter`` caps open sessions: one over a cap is answered 421 and closed."""
    session = _smtp_class()(
        handler,
        hostname=hostname,
        data_size_limit=data_size_limit,
        enable_SMTPUTF8=True,
        ident="Postern ESMTP",
        timeout=command_timeout,
    )
    session.postern_limiter, session.postern_data_timeout = limiter, data_timeout
    return session


@functools.cache
def _smtp_class():
    from aiosmtpd.smtp import SMTP, syntax  # imported by the listener only, not by every process

    class PosternSMTP(SMTP):
        postern_limiter: ConnectionLimiter | None = None
        postern_data_timeout: float = DEFAULT_DATA_TIMEOUT
        postern_client: str | None = None  # the limiter's key while this session counts
        postern_refused = False

        def connection_made(self, transport):
            # Called again with the TLS transport after STARTTLS: count only the first.
            if self.transport is None and self.postern_limiter is not None:
                key, refused = self.postern_limiter.acquire(transport.get_extra_info("peername"))
                if refused:
                    # RFC 5321 3.8: a server that cannot take the session answers 421 and
                    # closes; the sender keeps the message and retries later.
                    self.postern_refused = True
                    transport.write(TOO_MANY_TOTAL if refused == TOTAL else TOO_MANY_FROM_CLIENT)
                    transport.close()
                    return
                self.postern_client = key
            super().connection_made(transport)

        def connection_lost(self, error):
            if self.postern_refused:
                return
            if self.postern_client is not None:
                self.postern_limiter.release(self.postern_client)
                self.postern_client = None
            super().connection_lost(error)

        def data_received(self, data):
            if not self.postern_refused:
                super().data_received(data)

        def eof_received(self):
            if self.postern_refused:
                return False
            return super().eof_received()

        @syntax("DATA")
        async def smtp_DATA(self, arg):
            # The message gets its own, longer bound; the command timeout resumes after it.
            self._reset_timeout(self.postern_data_timeout)
            try:
                await super().smtp_DATA(arg)
            finally:
                if self.transport is not None:
                    self._reset_timeout()

        def _getaddr(self, arg):
            try:
                return super()._getaddr(arg)
            except (IndexError, ValueError):
                # The standard library's get_angle_addr raises IndexError on "<" and
                # "<@" (Python 3.11.7), which aiosmtpd lets escape: "MAIL FROM:<" was
                # answered "500 Error: (IndexError) …" with a traceback logged per
                # command. A malformed address gets aiosmtpd's own answer instead.
                return None, None

    return PosternSMTP


def run_listener(postern, handler_class: type[Handler] = Handler) -> None:
    """Service entry point (``postern service run smtp``): serve until SIGTERM.
    Another receive backend can serve its own ``Handler`` subclass (wildduck does).

    With ``processes`` above 1 the address is bound here once and served by that many
    forked processes (postern/core/prefork.py), each with its own loop, database
    threads and group committer: parsing MIME is CPU work that one process does on
    one core."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    receiver = postern.backend("receive")
    processes = getattr(receiver, "processes", 1)
    if processes <= 1:
        asyncio.run(_serve(postern, handler_class))
        return
    sockets = _bind(receiver.bind)
    database.close()  # each child opens its own: a connection must never be shared by two processes
    log.info("SMTP listening on %s in %d processes", receiver.bind, processes)
    serve_forked(sockets, processes, lambda socks: asyncio.run(_serve(postern, handler_class, socks)))


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


async def _serve(postern, handler_class: type[Handler], sockets: list[socket.socket] | None = None) -> None:
    receiver = postern.backend("receive")
    # aiosmtpd logs every command at INFO: a dozen lines per message, a measurable cost.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().level))
    runner = DatabaseRunner(receiver.threads)
    committer = GroupCommitter()
    handler = handler_class(postern, receiver, runner, committer)
    limit = postern.config.mail.max_message_bytes
    loop = asyncio.get_running_loop()

    # Per process: with ``processes`` N the listener admits N times these caps.
    limiter = ConnectionLimiter(
        "SMTP",
        getattr(receiver, "max_connections", DEFAULT_MAX_CONNECTIONS),
        getattr(receiver, "max_connections_per_client", DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
    )
    timeouts = {
        "command_timeout": getattr(receiver, "command_timeout", DEFAULT_COMMAND_TIMEOUT),
        "data_timeout": getattr(receiver, "data_timeout", DEFAULT_DATA_TIMEOUT),
    }

    def session():
        return smtp_session(handler, receiver.hostname, limit, limiter=limiter, **timeouts)

    if sockets is None:
        host, _, port = receiver.bind.rpartition(":")
        servers = [await loop.create_server(session, host.strip("[]"), int(port))]
    else:
        servers = [await loop.create_server(session, sock=sock) for sock in sockets]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("SMTP listening on %s (max %s bytes, %s recipients)", receiver.bind, limit, receiver.max_recipients)
    notify_ready()  # the loop greets from here on: the supervisor counts the port as served
    await stop.wait()
    for server in servers:
        server.close()
    for server in servers:
        await server.wait_closed()
    committer.shutdown()
    runner.shutdown()
