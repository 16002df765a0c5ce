"""A real SMTP server (aiosmtpd) on loopback standing in for the smarthost."""

from __future__ import annotations

import threading
from typing import NamedTuple


class Delivery(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # the message as it came over the wire


class Sink:
    """Keeps every message it accepts; answers ``reply`` (set a 4xx/5xx to refuse)."""

    def __init__(self):
        self.received: list[Delivery] = []
        self.reply = "250 OK queued"
        self.lock = threading.Lock()

    @property
    def raw(self) -> list[bytes]:
        """The accepted messages' bytes, in order of arrival."""
        return [delivery.data for delivery in self.received]

    async def handle_DATA(self, server, session, envelope):
        if self.reply.startswith("250"):
            with self.lock:
                data = envelope.original_content or envelope.content
                self.received.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos), data))
        return self.reply


def relaying_config(tmp_path, env: dict, port: int):
    """A config whose send backend relays to the sink on ``port`` (no STARTTLS), with
    Postern's DNS server on free ports (so DKIM keys are published and resolvable)."""
    from postern.core.config import load_config
    from support.dns import dns_config_text, free_udp_and_tcp_port

    path = tmp_path / "postern.toml"
    smarthost = f'[send.smtp_local]\nsmarthost = "127.0.0.1:{port}"\nstarttls = false\n'
    path.write_text(dns_config_text(free_udp_and_tcp_port()) + smarthost)
    return load_config(path, environ=env)
