"""One SMTP connection: RCPT checked against the core's inboxes, DATA parsed within
Postern's limits, then handed to the receive backend's ``on_message``, whose answer is
the reply to DATA."""

from __future__ import annotations

import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

import peewee

from postern.core import metrics
from postern.core.connlimits import TOTAL, ConnectionLimiter
from postern.core.db import DatabaseRunner, GroupCommitter
from postern.core.mail.ingest import SUSPENDED, MailRejected, limits_for, receiving_inbox, storable_address
from postern.core.mail.mime import parse
from postern.core.ratelimits.counters import STORE_ERRORS
from postern.core.smtp.options import DEFAULT_COMMAND_TIMEOUT, DEFAULT_DATA_TIMEOUT, ListenerOptions
from postern.core.smtp.tls import tls_of

log = logging.getLogger("postern.smtp")

TOO_MANY_TOTAL = b"421 4.7.0 Too many connections, try again later\r\n"
TOO_MANY_FROM_CLIENT = b"421 4.7.0 Too many connections from your address, try again later\r\n"
UNPARSEABLE = "554 5.6.0 Message could not be parsed"


@dataclass(frozen=True)
class Arrival:
    """A message the listener accepted at DATA, parsed within Postern's limits, with the
    listener process's thread pool and group committer for the work of keeping it."""

    raw: bytes
    parsed: Any  # postern.core.mail.mime's parse result
    mail_from: str
    recipients: list[str]
    #: Address (lower case) -> the inbox RCPT found for it.
    inboxes: dict[str, Any]
    runner: DatabaseRunner
    committer: GroupCommitter
    #: The session's TLS version and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"); None in plaintext.
    tls: str | None = None
    #: The client's address and its HELO/EHLO name, for SPF.
    client_ip: str = ""
    helo: str = ""


#: What a receive backend does with an arrival; its answer is the SMTP reply to DATA.
OnMessage = Callable[[Arrival], Awaitable[str]]


class Handler:
    """aiosmtpd handler. Lookups and parsing run on a small thread pool, off the loop;
    ``on_message`` keeps the message (smtp_local stores it through a group committer,
    so concurrent sessions share one commit)."""

    def __init__(
        self,
        postern,
        options: ListenerOptions,
        on_message: OnMessage,
        runner: DatabaseRunner,
        committer: GroupCommitter,
    ):
        self.postern = postern
        self.options = options
        self.on_message = on_message
        self.runner = runner
        self.committer = committer
        self.limits = limits_for(postern)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        """Each message (MAIL FROM) counts against the client address's ``ip_smtp_mail``
        limit (docs/limits.md); past it, 451 4.7.1: a sending server retries later."""
        limiter = self.postern.limiter
        if limiter is not None:
            client = _client_ip(getattr(session, "peer", None))
            try:
                verdict = await self.runner.run(limiter.charge, {"ip": client}, "smtp_mail")
            except STORE_ERRORS as exc:  # a counter store down must not stop mail
                log.warning("MAIL from %s: rate-limit counters unavailable, not counted: %s", client, exc)
            else:
                if not verdict.allowed:
                    metrics.RATE_LIMITED.labels("ip_smtp_mail").inc()
                    return _refused(
                        "mail", "rate_limited", "451 4.7.1 Too many messages from your address, try again later"
                    )
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.options.max_recipients:
            return _refused("rcpt", "too_many_recipients", "452 4.5.3 Too many recipients")
        if not storable_address(address.strip()):
            return _refused("rcpt", "invalid_address", "553 5.1.3 Invalid mailbox address")
        try:
            known = await self.runner.run(receiving_inbox, address)
        except peewee.PeeweeException as exc:
            log.warning("RCPT %s: database unavailable: %s", address, exc)
            return _refused("rcpt", "database_unavailable", "451 4.3.0 Temporary failure, try again later")
        if known is None:
            return _refused("rcpt", "no_such_mailbox", "550 5.1.1 No such mailbox here")
        if known is SUSPENDED:
            # Deferred, not refused: senders retry for days, so nothing is lost if the
            # operator resumes the customer meanwhile.
            return _refused("rcpt", "mailbox_disabled", "450 4.2.1 Mailbox temporarily disabled")
        if not hasattr(envelope, "postern_inboxes"):
            envelope.postern_inboxes = {}
        envelope.postern_inboxes[address.strip().lower()] = known
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        """The reply to DATA, counted: 250 (with the time since the message's last byte
        arrived) or a refusal (postern/core/metrics.py)."""
        started = time.perf_counter()
        reply = await self._data(session, envelope)
        if reply.startswith("250"):
            metrics.SMTP_ACCEPTED.inc()
            metrics.SMTP_INGEST_LATENCY.observe(time.perf_counter() - started)
        elif not isinstance(reply, _Counted):
            _refused("data", "refused_by_backend", reply)  # on_message's own: a policy, a fault
        return reply

    async def _data(self, session, envelope) -> str:
        raw = envelope.original_content or envelope.content
        try:
            parsed = await self.runner.run(parse, raw, self.limits)
        except MailRejected as exc:
            log.info("refused a message from %s: %s", envelope.mail_from, exc.message)
            return _refused("data", "message_rejected", f"{exc.smtp_code} {exc.message}")
        except Exception:
            # Parsing depends on the bytes alone: a retry would fail the same way, so a
            # 4xx here would have the sender resend a poison message forever.
            log.exception("could not parse a message from %s; refused it for good", envelope.mail_from)
            return _refused("data", "unparseable", UNPARSEABLE)
        arrival = Arrival(
            raw=raw,
            parsed=parsed,
            mail_from=envelope.mail_from or "",
            recipients=list(envelope.rcpt_tos),
            inboxes=getattr(envelope, "postern_inboxes", {}),
            runner=self.runner,
            committer=self.committer,
            tls=tls_of(session),
            client_ip=_client_ip(getattr(session, "peer", None)),
            helo=getattr(session, "host_name", None) or "",
        )
        return await self.on_message(arrival)


class _Counted(str):
    """A reply already counted as a refusal (``_refused``)."""


def _refused(stage: str, reason: str, reply: str) -> str:
    """Count a refusal by stage, code class and a short reason, and return the reply."""
    metrics.SMTP_REFUSED.labels(stage, f"{reply[:1]}xx", reason).inc()
    return _Counted(reply)


def _client_ip(peer) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def smtp_session(
    handler,
    hostname: str,
    data_size_limit: int,
    *,
    limiter: ConnectionLimiter | None = None,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    data_timeout: float = DEFAULT_DATA_TIMEOUT,
    tls_context: ssl.SSLContext | None = None,
    require_tls: bool = False,
):
    """One connection's aiosmtpd protocol, as the listener serves it (the fuzzers too).
    A fixed hostname: aiosmtpd otherwise calls socket.getfqdn() per connection.
    ``limiter`` caps open sessions: one over a cap is answered 421 and closed.
    With ``tls_context`` STARTTLS is offered; ``require_tls`` refuses MAIL before it."""
    session = _smtp_class()(
        handler,
        hostname=hostname,
        data_size_limit=data_size_limit,
        enable_SMTPUTF8=True,
        ident="Postern ESMTP",
        timeout=command_timeout,
        tls_context=tls_context,
    )
    session.postern_limiter, session.postern_data_timeout = limiter, data_timeout
    session.postern_require_tls = require_tls and tls_context is not None
    return session


@functools.cache
def _smtp_class():
    from aiosmtpd.smtp import SMTP, TLSSetupException, syntax  # the listener's import, not every process's

    class PosternSMTP(SMTP):
        postern_limiter: ConnectionLimiter | None = None
        postern_data_timeout: float = DEFAULT_DATA_TIMEOUT
        postern_client: str | None = None  # the limiter's key while this session counts
        postern_refused = False
        # Not aiosmtpd's require_starttls: its refusal has no enhanced status code
        # (RFC 3207 section 4 asks for 530 5.7.0) and it refuses HELO and RSET as well.
        postern_require_tls = False

        def connection_made(self, transport):
            # Called again with the TLS transport after STARTTLS: count only the first.
            if self.transport is None and self.postern_limiter is not None:
                key, refused = self.postern_limiter.acquire(transport.get_extra_info("peername"))
                if refused:
                    # RFC 5321 3.8: a server that cannot take the session answers 421 and
                    # closes; the sender keeps the message and retries later.
                    self.postern_refused = True
                    _refused("connect", "too_many_connections", "421")
                    transport.write(TOO_MANY_TOTAL if refused == TOTAL else TOO_MANY_FROM_CLIENT)
                    transport.close()
                    return
                self.postern_client = key
            if self.transport is None:
                metrics.SMTP_SESSIONS.inc()
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

        @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
        async def smtp_MAIL(self, arg):
            if self.postern_require_tls and self._tls_protocol is None:
                await self.push(_refused("mail", "tls_required", "530 5.7.0 Must issue a STARTTLS command first"))
                return
            await super().smtp_MAIL(arg)

        @syntax("STARTTLS", when="tls_context")
        async def smtp_STARTTLS(self, arg):
            # aiosmtpd would wrap a second TLS layer inside the first (RFC 3207 4.2:
            # a client must not start TLS twice); refusing keeps the session usable.
            if self._tls_protocol is not None:
                await self.push("503 5.5.1 TLS already active")
                return
            await super().smtp_STARTTLS(arg)

        async def handle_exception(self, error):
            if isinstance(error, TLSSetupException):
                # A client that offers only old TLS versions, or hangs up mid-handshake:
                # aiosmtpd logs each as an ERROR with a traceback, and closes the session.
                log.info("STARTTLS handshake with %s failed: %s", self.session.peer, error.__cause__)
                return "421 4.7.0 TLS handshake failed"  # not sent: aiosmtpd closes the connection
            return await super().handle_exception(error)

        def _getaddr(self, arg):
            """aiosmtpd's ``_getaddr`` (the same answers), without the typing Protocol
            class it defines on every call: that class creation was ~5% of an SMTP
            session's CPU, paid for each MAIL and RCPT."""
            if not arg:
                return "", ""
            try:
                if arg.lstrip().startswith("<"):
                    address, rest = get_angle_addr(arg)
                else:
                    address, rest = get_addr_spec(arg)
                # Inside the try: for '"' and '<"' the parse succeeds and reading
                # addr_spec raises IndexError.
                addr = address.addr_spec
            except (HeaderParseError, IndexError, ValueError):
                # The standard library's get_angle_addr raises IndexError on "<" and
                # "<@" (Python 3.11.7), which aiosmtpd lets escape: "MAIL FROM:<" was
                # answered "500 Error: (IndexError) …" with a traceback logged per
                # command. A malformed address gets aiosmtpd's own answer instead.
                return None, None
            if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
                return None, None
            return addr, rest

    return PosternSMTP
