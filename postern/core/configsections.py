"""The shape of the configuration: one dataclass per ``postern.toml`` section, their
defaults and documented choices, and the whole ``Config``. Loading, environment
overrides and validation are in ``postern.core.config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# docs/security.md, "Reserved mailboxes", says why each is here and why business role
# names (info, sales, support) are not.
RESERVED_LOCAL_PARTS = (
    "abuse", "admin", "administrator", "ftp", "hostmaster", "mailer-daemon", "news", "noc",
    "postmaster", "root", "security", "usenet", "uucp", "webmaster", "www",
)  # fmt: skip

DEFAULT_CONFIG_NAME = "postern.toml"
DEFAULT_DATA_DIR = "postern-data"


class Secret(str):
    """A string that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass
class ServerConfig:
    bind: str = "127.0.0.1:8800"
    workers: int = 2
    #: Seconds a worker may stay silent before gunicorn restarts it.
    timeout: int = 120
    #: Seconds given to in-flight requests on SIGTERM.
    graceful_timeout: int = 20
    #: Longest wait, in seconds, before a crashed child is restarted: the wait starts at
    #: 1 s and doubles per crash, and resets once the child ran 30 s.
    restart_backoff_max: int = 60
    #: Seconds a new connection has to send its first request's headers, however they
    #: trickle in; then it is closed (slowloris, clients that connect and say nothing).
    header_timeout: int = 10
    #: Seconds an idle kept-alive connection is held between requests.
    keepalive: int = 5
    #: Open connections per API worker, in total and per client address (IPv6: per
    #: /64; 0 = no per-client cap, e.g. behind a reverse proxy). Over a cap: 503.
    max_connections: int = 1000
    max_connections_per_client: int = 256
    #: Base URL clients reach the API at, e.g. "https://postern.example.org": download
    #: links (and webhook links, unless webhooks.public_url is set) are built on it. Empty
    #: gives links relative to the API root; never taken from the request's Host header.
    public_url: str = ""
    #: CIDR ranges of the reverse proxies in front of the API, e.g. ["127.0.0.1/32"]:
    #: only a peer in one of them is believed about X-Forwarded-For (the client's
    #: address, for audit rows and the console's sign-in throttle) and X-Forwarded-Proto
    #: (https: the console's cookie is Secure). Empty: no peer is (docs/deployment.md).
    trusted_proxies: list[str] = field(default_factory=list)


@dataclass
class DatabaseConfig:
    #: Empty means ``sqlite:///<data_dir>/postern.db``.
    url: str = ""
    #: Apply pending migrations at start; with false, a behind schema refuses to start.
    auto_migrate: bool = True
    #: SQLite only: "full" keeps every commit across power loss, "normal" only across crashes.
    sqlite_synchronous: str = "full"
    #: Threads per API worker that run database work off the event loop; 0 picks for
    #: the database (see ``Config.database_threads``).
    threads: int = 0


@dataclass
class LogConfig:
    level: str = "info"
    #: "text" or "json" (one JSON object per line).
    format: str = "text"
    #: Also write the log to this file (relative: to data_dir), rotated by size; empty:
    #: standard error only (under systemd, the journal).
    file: str = ""
    #: Rotate the file when it would grow past this many bytes...
    max_bytes: int = 10 * 1024 * 1024
    #: ...keeping this many old files (FILE.1 ... FILE.N).
    backup_count: int = 5


@dataclass
class MailConfig:
    #: Base mail domain: each tenant receives at <label>.<domain>.
    domain: str = "agents.localhost"
    #: Largest message accepted, in bytes (SMTP answers 552 above it).
    max_message_bytes: int = 25 * 1024 * 1024
    #: Deepest MIME nesting and most MIME parts accepted (MIME-bomb limits).
    max_mime_depth: int = 10
    max_mime_parts: int = 200
    #: Find one-time codes and verification links in inbound mail at ingest (the
    #: ``codes`` and ``links`` of a message). false: none are found (bench baseline).
    extract_codes: bool = True
    #: Seals the DKIM private keys in the database (give it as { env = "NAME" }). Empty:
    #: a random key in <data_dir>/secrets/dkim.key. Every sending host needs the same one.
    dkim_key_secret: str = ""
    #: Seconds one delivery attempt owns an outbound message. A message whose sending
    #: process died is retried by the outbox once this has passed, so it bounds how
    #: long a crash delays a send; keep it above the send backend's timeout, or a slow
    #: attempt and its retry may both reach the relay.
    outbound_lease_seconds: int = 300
    #: Delivery attempts the outbox runs at once: a relay or MX that hangs until its
    #: deadline holds one of them, never the whole queue (direct mode talks to many).
    outbox_threads: int = 8
    #: Hours a message held for human approval waits (an enrollment key's or inbox's
    #: ``require_approval``); unreviewed by then, it becomes ``expired`` and is never sent.
    approval_expiry_hours: int = 72
    #: A send to more recipients than this counts as bulk (as does one marked ``"bulk":
    #: true``): each outside recipient gets a copy of its own carrying a one-click
    #: ``List-Unsubscribe`` (RFC 8058) handled by Postern (docs/deliverability.md).
    bulk_recipients: int = 10
    #: Local parts agents may not take, on any domain: only an operator or org admin
    #: creates them (``postern admin inbox create``, ``POST /v1/admin/agents/{id}/inboxes``).
    #: Default: RFC 2142's operational mailboxes, the CA/Browser Forum's domain-control
    #: addresses (admin, administrator, webmaster, hostmaster, postmaster), root and
    #: mailer-daemon. Compared with the normalised (lower-case) local part.
    reserved_local_parts: list[str] = field(default_factory=lambda: list(RESERVED_LOCAL_PARTS))


@dataclass
class AuthConfig:
    #: Lifetime of a minted agent key, in seconds (never beyond its enrollment key's expiry).
    agent_key_ttl_seconds: int = 86400
    #: Lifetime of a signed download link (raw message, attachment), in seconds.
    download_link_ttl_seconds: int = 300


@dataclass
class TrustConfig:
    #: Check SPF, DKIM, DMARC and ARC of inbound mail at receive (docs/trust.md).
    verify: bool = True
    #: DNS server for those checks as "host:port"; empty: the system's resolvers.
    resolver: str = ""
    #: Seconds all of one message's checks may take (their lookups together); past
    #: it the verdicts are temperror and the message is stored all the same.
    dns_timeout: int = 5
    #: The authserv-id of the Authentication-Results header Postern adds; empty: the
    #: SMTP listener's hostname.
    authserv_id: str = ""
    #: Mail that fails DMARC where the From domain publishes p=reject: refuse (550 5.7.1
    #: at DATA), quarantine (held for a human) or deliver (stored, marked). Customers and
    #: inboxes may choose otherwise (docs/trust.md, "Policy").
    dmarc_reject: str = "quarantine"
    #: Mail with no aligned SPF or DKIM pass: deliver (marked), quarantine or refuse.
    unauthenticated: str = "deliver"


@dataclass
class WebhooksConfig:
    #: CIDR ranges webhook URLs may reach although they are not public (loopback, private,
    #: link-local...), e.g. ["127.0.0.0/8"]; empty refuses every non-public destination.
    allow_destinations: list[str] = field(default_factory=list)
    #: Seconds to connect, and then between bytes of the response, for one delivery attempt.
    timeout_seconds: int = 15
    #: Seconds to wait before attempts 2, 3, ...; a delivery fails after the last one.
    retry_schedule: list[int] = field(default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000])
    #: A webhook is disabled after this many deliveries in a row failed every attempt.
    disable_after_failed_deliveries: int = 3
    #: Text and HTML bodies are included in message events up to this many characters each.
    max_body_chars: int = 65536
    #: Deliveries sent at once by one dispatcher process.
    concurrency: int = 8
    #: Base URL put in front of the API links in payloads, e.g. "https://postern.example.org";
    #: empty gives links relative to the API root.
    public_url: str = ""


@dataclass
class McpConfig:
    #: Run the MCP server over streamable HTTP as a service of ``postern serve``.
    enabled: bool = False
    bind: str = "127.0.0.1:8810"
    #: The REST API the MCP server calls; empty means this server's own ``server.bind``.
    api_base_url: str = ""


@dataclass
class AuditConfig:
    #: Audit rows older than this many days are deleted by the outbox's sweep, in
    #: batches, each batch leaving one ``audit.purge`` row; 0 keeps them forever.
    keep_days: int = 0


@dataclass
class ConsoleConfig:
    #: Serve the console (docs/console.md) under /console on the API.
    enabled: bool = True
    #: A session ends after this many minutes without a request...
    idle_minutes: int = 30
    #: ...and this many hours after sign-in whatever happens.
    absolute_hours: int = 12
    #: Minutes a link printed by ``postern admin console-link`` stays valid (used once).
    link_minutes: int = 15
    #: Failed sign-ins allowed per client address in 15 minutes before 429.
    max_failed_logins: int = 10


@dataclass
class MetricsConfig:
    #: Serve Prometheus metrics at GET /metrics on the API (docs/operations.md, "Metrics").
    enabled: bool = True
    #: When set (give it as { env = "NAME" }), a scrape must send "Authorization: Bearer
    #: <token>". Empty: /metrics answers only requests from loopback addresses (else 404).
    token: str = ""


@dataclass
class LimitsConfig:
    """Request rate limits (docs/limits.md). A rate is "<count>/<period>" with period
    second, minute, hour or day (e.g. "60/minute"); "" turns that one limit off.
    Every request counts against its route class (read, write, send, wait, enroll)
    for its agent key, that key's enrollment and its customer at once; requests
    without a valid key count against the client's address."""

    #: Off: no request is counted or refused (mailbox quotas and billing still apply).
    enabled: bool = True
    #: Where the counters live: "database" (exact across workers and, on PostgreSQL,
    #: across hosts; SQLite keeps them in a file of their own beside the database) or
    #: "memory" (one process only: exact only with server.workers = 1).
    storage: str = "database"
    agent_read: str = "600/minute"
    agent_write: str = "120/minute"
    agent_send: str = "30/minute"
    agent_wait: str = "120/minute"
    enrollment_read: str = "3000/minute"
    enrollment_write: str = "600/minute"
    enrollment_send: str = "120/minute"
    enrollment_wait: str = "600/minute"
    #: Redemptions of one enrollment key (each mints or renews an agent key).
    enrollment_enroll: str = "60/hour"
    customer_read: str = "6000/minute"
    customer_write: str = "1200/minute"
    customer_send: str = "300/minute"
    customer_wait: str = "1200/minute"
    customer_enroll: str = "600/hour"
    #: Requests that present no key (enrollment, download links), per client address.
    ip_anonymous: str = "300/minute"
    #: Failed authentications per client address; past it, every request from that
    #: address is refused until the window ends, and refusals are audited in aggregate.
    ip_failed_auth: str = "30/minute"
    #: Sending limits: messages one inbox / one customer sends per period, and the
    #: recipients those messages have in all (a message to 5 people counts 5).
    inbox_send_messages: str = "100/hour"
    customer_send_messages: str = "1000/hour"
    inbox_send_recipients: str = "500/day"
    customer_send_recipients: str = "5000/day"
    #: Recipients (to + cc + bcc) one message may have; 0 = only the API's own cap
    #: (100 per field). Over it: 422 too_many_recipients.
    recipients_per_message: int = 50
    #: A fresh domain's ramp: in the first ``fresh_domain_days`` days after its first inbox,
    #: a domain may send to this many recipients it never sent to before on its first
    #: day, twice as many the next day, and so on ("" or 0 days: no ramp).
    fresh_domain_new_recipients: str = "50/day"
    fresh_domain_days: int = 14
    #: Messages (MAIL FROM) per client address on the SMTP listener; past it 451 4.7.1.
    #: Recipients per message are [receive.smtp_local] max_recipients (452 4.5.3).
    ip_smtp_mail: str = "120/minute"


@dataclass
class PluginsConfig:
    #: Plugin names (entry-point or module) that must not load.
    disabled: list[str] = field(default_factory=list)
    #: Extra plugin modules, by import path.
    modules: list[str] = field(default_factory=list)


@dataclass
class RoleConfig:
    """One backend role: the chosen backend and every backend's options table."""

    backend: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: False when the name is the built-in default rather than chosen in config.
    explicit: bool = False

    def options_for(self, name: str) -> dict[str, Any]:
        return self.options.get(name, {})


DEFAULT_BACKENDS = {"send": "smtp_local", "receive": "smtp_local", "dns": "dns_builtin", "billing": "free"}

CHOICES = {
    ("database", "sqlite_synchronous"): ("full", "normal"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("text", "json"),
    ("limits", "storage"): ("database", "memory"),
    ("trust", "dmarc_reject"): ("refuse", "quarantine", "deliver"),
    ("trust", "unauthenticated"): ("refuse", "quarantine", "deliver"),
}


@dataclass
class Config:
    """The whole configuration, resolved and validated."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    log: LogConfig = field(default_factory=LogConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    #: The file this came from, if any; child processes reload it.
    source: Path | None = None
    #: ``POSTERN_<ROLE>_<BACKEND>_<OPTION>`` variables, put into ``roles`` once the
    #: installed backend names are known (``envconfig.apply_backend_options``).
    env_backend_options: list = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'postern.db').resolve()}"

    @property
    def database_threads(self) -> int:
        """``database.threads``, or when 0: 2 on SQLite, 8 on PostgreSQL. SQLite runs one
        writer at a time and a read takes microseconds, so more threads only queue for
        the GIL (measured: ~20% more CPU per request with 8 than with 2); PostgreSQL
        reads wait on the network, where threads overlap."""
        if self.database.threads > 0:
            return self.database.threads
        return 2 if self.database_url.startswith("sqlite") else 8

    def role(self, role: str) -> RoleConfig:
        return self.roles[role]


SECTIONS = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "log": LogConfig,
    "mail": MailConfig,
    "auth": AuthConfig,
    "webhooks": WebhooksConfig,
    "trust": TrustConfig,
    "mcp": McpConfig,
    "console": ConsoleConfig,
    "audit": AuditConfig,
    "metrics": MetricsConfig,
    "limits": LimitsConfig,
    "plugins": PluginsConfig,
}
