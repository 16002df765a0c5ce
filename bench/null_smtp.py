"""A do-nothing aiosmtpd server for bench/smtp_ingest.py: every RCPT and DATA gets 250.

Built exactly as Postern's listener builds its server (postern/core/smtp/listener.py
``_serve``): same ``SMTP`` arguments, Postern's default hostname and
message size limit, uvloop when Postern would use it. So the only difference from
Postern is the handler: no RCPT lookup, no parse, no store.

With ``--parse`` the handler parses each message with Postern's own parser (limits
included) before its 250, and stores nothing: the ceiling of any single-process
listener that refuses a MIME bomb at DATA, as Postern must.

    python bench/null_smtp.py 127.0.0.1:PORT [--parse]
"""

from __future__ import annotations

import asyncio
import signal
import sys


class NullHandler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


class ParseOnlyHandler(NullHandler):
    def __init__(self):
        from postern.core.mail.mime import MailLimits

        self.limits = MailLimits()

    async def handle_DATA(self, server, session, envelope):
        from postern.core.mail.mime import parse

        parse(envelope.original_content or envelope.content, self.limits)
        return "250 2.0.0 OK"


async def serve(bind: str, handler) -> None:
    from aiosmtpd.smtp import SMTP

    from postern.core.config import Config
    from postern.core.smtp.options import DEFAULT_HOSTNAME

    hostname = DEFAULT_HOSTNAME
    limit = Config().mail.max_message_bytes
    host, _, port = bind.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=hostname, data_size_limit=limit, enable_SMTPUTF8=True, ident="Postern ESMTP"),
        host,
        int(port),
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    try:
        import uvloop

        uvloop.install()  # as run_listener does
    except ImportError:
        pass
    handler = ParseOnlyHandler() if "--parse" in sys.argv[2:] else NullHandler()
    asyncio.run(serve(sys.argv[1], handler))


if __name__ == "__main__":
    main()
