"""``ListenerOptions``: how an SMTP listener is configured, as a receive backend's
config table gives it (``[receive.smtp_local]``; wildduck's ``smtp_*`` options)."""

from __future__ import annotations

from dataclasses import dataclass

from postern.core.options import at_least, between, host_port, option
from postern.core.smtp.tls import check_tls_files, readable_file_or_empty

DEFAULT_BIND = "127.0.0.1:2525"
DEFAULT_HOSTNAME = "postern.localhost"
MAX_PROCESSES = 64
#: Seconds a client has to send each command (aiosmtpd's timer restarts at each valid
#: command, not at each byte, so trickling a command slowly does not extend it).
DEFAULT_COMMAND_TIMEOUT = 60
#: Seconds a client has, after DATA, to send the whole message.
DEFAULT_DATA_TIMEOUT = 300
#: Open sessions per listener process, in total and per client address (IPv6: per /64).
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 50

#: The checks of the fields below, for a backend that names the same options its own way.
CHECK_PROCESSES = between(1, MAX_PROCESSES)
CHECK_AT_LEAST_ONE = at_least(1)


@dataclass(frozen=True)
class ListenerOptions:
    bind: str = option(DEFAULT_BIND, check=host_port, help="host:port to listen on")
    hostname: str = option(DEFAULT_HOSTNAME, help="the name the listener greets with")
    max_recipients: int = option(100, check=CHECK_AT_LEAST_ONE, help="RCPT TO accepted per message")
    threads: int = option(4, check=CHECK_AT_LEAST_ONE, help="database threads per listener process")
    processes: int = option(
        1, check=CHECK_PROCESSES, help="listener processes sharing the socket (MIME parsing is CPU work)"
    )
    command_timeout: int = option(
        DEFAULT_COMMAND_TIMEOUT, check=CHECK_AT_LEAST_ONE, help="seconds a client has for each command"
    )
    data_timeout: int = option(
        DEFAULT_DATA_TIMEOUT, check=CHECK_AT_LEAST_ONE, help="seconds a client has to send a message after DATA"
    )
    max_connections: int = option(
        DEFAULT_MAX_CONNECTIONS, check=CHECK_AT_LEAST_ONE, help="open sessions per listener process"
    )
    max_connections_per_client: int = option(
        DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        check=CHECK_AT_LEAST_ONE,
        help="open sessions per client address (IPv6: per /64) per listener process",
    )
    tls_cert: str = option(
        "",
        check=readable_file_or_empty,
        help="PEM certificate (its chain after it) that STARTTLS offers; reloaded when the file changes",
    )
    tls_key: str = option("", check=readable_file_or_empty, help="PEM private key of tls_cert")
    require_tls: bool = option(False, help="refuse MAIL (530 5.7.0) until the client has started TLS")

    def __post_init__(self):
        check_tls_files(self.tls_cert, self.tls_key, self.require_tls)
