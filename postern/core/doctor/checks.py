"""The checks of ``postern doctor``: each a small function returning findings, none
changing anything (no database file created, no migration applied, no key made, no
mail sent). ``run_checks`` runs them in order; a check that needs what an earlier one
found missing (a config that loads, a database at the current schema) is left out.

What a backend depends on is its own to probe (``Backend.probe``) and where it listens
its own to say (``Backend.listens``): the core imports no plugin."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from postern.core.doctor.report import WARN, Finding, fail, ok, warn

log = logging.getLogger("postern.doctor")

#: Seconds each network wait of a probe may take.
PROBE_TIMEOUT = 5.0
#: A certificate expiring within this many days is a warning.
CERT_WARN_DAYS = 14
#: Tenant domains whose published records are looked up, at most (the first by name).
MAX_DOMAINS = 20
#: Top-level names never delegated on the internet: a development install's base
#: domain there cannot be seen through the system's resolvers, and that is no fault.
LOCAL_TLDS = ("localhost", "test", "invalid", "example", "local", "internal")
#: The secrets in the database every process needs (made by the migrations).
SERVER_SECRETS = ("download_links", "webhook_secrets")


@dataclass
class State:
    """What the checks learn as they go."""

    config: object = None
    postern: object = None
    #: The database answers and is at the schema this Postern knows.
    database_ready: bool = False
    problems: Mapping[str, str] = field(default_factory=dict)
    running: bool | None = None


def run_checks(config_path: str | None = None, *, environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Every check, in order, for the config at ``config_path`` (else $POSTERN_CONFIG,
    else ./postern.toml, else the embedded defaults)."""
    from postern.core.db import database

    state = State()
    findings = check_config(state, config_path, environ)
    if state.config is None:
        return findings
    findings += check_backends_load(state)
    findings += check_file_modes(state)
    try:
        findings += check_database(state)
        findings += check_secrets(state)
        findings += check_ports(state)
        findings += check_backend_probes(state)
        findings += check_dns(state)
        findings += check_certificates(state)
    finally:
        if state.database_ready:
            database.close()
    return findings


# -- configuration ------------------------------------------------------------------


def check_config(state: State, config_path: str | None, environ: Mapping[str, str] | None) -> list[Finding]:
    from postern.core.config import load_config
    from postern.core.errors import PosternError

    try:
        state.config = load_config(config_path, environ)
    except PosternError as exc:
        return [fail("config", f"the configuration does not load: {exc.message}", "fix the file or variable named")]
    where = str(state.config.source) if state.config.source else "no file: the embedded defaults"
    return [ok("config", f"loads and validates ({where}; data in {state.config.data_dir})")]


def check_backends_load(state: State) -> list[Finding]:
    """Each role's backend is installed and takes its options."""
    from postern.core.runtime import build_postern

    try:
        state.postern = build_postern(state.config, open_db=False, validate=False)
    except Exception as exc:  # noqa: BLE001  (a plugin that fails to load is the finding)
        return [fail("backends", f"the plugins do not load: {exc}", "fix [plugins] in the config, or the plugin")]
    postern = state.postern
    state.problems = postern.backend_problems()
    findings = []
    for status in postern.role_status():
        check = f"backends.{status.role}"
        if status.role in state.problems:
            findings.append(
                fail(check, state.problems[status.role], f"fix [{status.role}] or [{status.role}.{status.backend}]")
            )
        elif not status.available:
            findings.append(
                warn(
                    check,
                    f"no {status.role} backend: the default '{status.backend}' is not installed",
                    f"install its plugin, or set [{status.role}] backend",
                )
            )
        else:
            origin = "configured" if status.explicit else "the default"
            findings.append(ok(check, f"'{status.backend}' ({origin}, plugin {status.plugin}) takes its options"))
    return findings


def _active(state: State) -> list:
    """The active backends that load: those of roles without a problem."""
    if state.postern is None:
        return []
    backends = []
    for status in state.postern.role_status():
        if status.available and status.role not in state.problems:
            backend = state.postern.active(status.role)
            if backend is not None:
                backends.append(backend)
    return backends


# -- files --------------------------------------------------------------------------


def check_file_modes(state: State) -> list[Finding]:
    """The data directory, the config file, the secrets and the SQLite database's files
    are the Postern user's alone (group and others: no permission at all)."""
    from postern.core.filemodes import SQLITE_SIBLINGS

    config = state.config
    findings = []
    root = Path(config.data_dir)
    if not root.exists():
        findings.append(ok("files.data_dir", f"{root} does not exist yet: postern serve makes it (mode 0700)"))
    else:
        findings.append(_mode_finding("files.data_dir", root, "the data directory (every tenant's mail)"))
    if config.source is not None:
        findings.append(
            _mode_finding("files.config", Path(config.source), "the config file", "secrets belong in { env = ... }")
        )
    secrets_dir = root / "secrets"
    if secrets_dir.is_dir():
        for path in sorted(secrets_dir.iterdir()):
            findings.append(_mode_finding("files.secrets", path, "a secret key"))
    url = config.database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url[len("sqlite:///") :])
        for suffix in SQLITE_SIBLINGS:
            path = Path(f"{database}{suffix}")
            if path.exists():
                findings.append(_mode_finding("files.database", path, "the database"))
    for listen in _listens(state):
        if listen.tls_key:
            findings.append(_mode_finding("files.tls_key", Path(listen.tls_key), f"the TLS key of the {listen.name}"))
    # Only what is wrong, and one line for all that is right.
    wrong = [f for f in findings if f.status != "OK" or f.check == "files.data_dir"]
    fine = [f for f in findings if f.status == "OK" and f.check != "files.data_dir"]
    if fine:
        wrong.append(ok("files.modes", f"{len(fine)} other file(s) private to their owner"))
    return wrong


def _mode_finding(check: str, path: Path, what: str, extra: str = "") -> Finding:
    try:
        st = path.stat()
    except OSError as exc:
        return warn(check, f"{path} ({what}) cannot be read: {exc.strerror}", "check the path and its permissions")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        private = "700" if stat.S_ISDIR(st.st_mode) else "600"
        hint = (
            "; postern serve tightens the data directory at start"
            if check.startswith(("files.data", "files.sec"))
            else ""
        )
        note = f" ({extra})" if extra else ""
        return warn(
            check,
            f"{path} ({what}) is mode {mode:04o}: other users on this host may read it{note}",
            f"chmod {private} {path}{hint}",
        )
    return ok(check, f"{path} is mode {mode:04o}")


# -- database -----------------------------------------------------------------------


def check_database(state: State) -> list[Finding]:
    """The database answers and its schema is the one this Postern knows. A missing
    SQLite file is not made: that is ``postern db upgrade``'s (or the server's) job."""
    import peewee

    from postern.core import migrations
    from postern.core.db import database, open_database
    from postern.core.dberrors import explain
    from postern.core.errors import PosternError

    config = state.config
    url = config.database_url
    upgrade = "run 'postern db upgrade' (postern serve does it at start with database.auto_migrate = true)"
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///") :])
        if not path.exists():
            return [fail("database", f"no database at {path}", upgrade)]
    try:
        open_database(url, config.database.sqlite_synchronous)
        database.connect(reuse_if_open=True)
        current, latest = migrations.current_version(), migrations.latest_version()
    except (peewee.PeeweeException, OSError) as exc:
        database.close()
        return [fail("database", explain(exc, database.obj), "make the database reachable (database.url)")]
    except PosternError as exc:
        database.close()
        return [fail("database", exc.message, "check database.url")]
    if current < latest:
        database.close()
        pending = latest - current
        auto = " (database.auto_migrate is on: postern serve would apply them at start)"
        return [
            fail(
                "database.schema",
                f"the schema is at version {current}, this Postern needs {latest}: {pending} migration(s) pending"
                + (auto if config.database.auto_migrate else ""),
                "run 'postern db upgrade'",
            )
        ]
    if current > latest:
        database.close()
        return [
            fail(
                "database.schema",
                f"the schema is at version {current}, newer than this Postern knows ({latest})",
                "upgrade Postern to the version that wrote it",
            )
        ]
    state.database_ready = True
    return [ok("database", f"answers, schema at version {current} (current)")]


def check_secrets(state: State) -> list[Finding]:
    """The key that seals DKIM private keys is there and opens them; the secrets every
    process shares are in the database."""
    from postern.core import dkim
    from postern.core.models import DkimKey, ServerSecret

    config = state.config
    findings = []
    first = DkimKey.select().order_by(DkimKey.domain).first() if state.database_ready else None
    path = Path(config.data_dir) / "secrets" / "dkim.key"
    restore = f"restore {path} from a backup, or set the mail.dkim_key_secret every sending host shares"
    if config.mail.dkim_key_secret:
        source = "mail.dkim_key_secret"
    elif path.exists():
        source = str(path)
    elif first is not None:
        count = DkimKey.select().count()
        return [fail("secrets.dkim", f"{count} DKIM key(s) are sealed, but {path} is missing", restore)]
    else:
        source = None
        findings.append(ok("secrets.dkim", f"no DKIM key yet: {path} is made with the first tenant's key"))
    if source is not None:
        try:
            kek = dkim.kek(config)  # reads: the file exists, or the secret is set
            if first is not None:
                dkim.unseal(kek, first.private_key_sealed, first.domain, first.selector)
        except (dkim.DkimKeyUnavailable, OSError) as exc:
            findings.append(fail("secrets.dkim", f"the DKIM sealing key ({source}): {exc}", restore))
        else:
            opened = f"; it opens the key of {first.domain}" if first is not None else ""
            findings.append(ok("secrets.dkim", f"DKIM keys sealed with {source}{opened}"))
    if state.database_ready:
        have = {name for (name,) in ServerSecret.select(ServerSecret.name).tuples()}
        missing = [name for name in SERVER_SECRETS if name not in have]
        if missing:
            findings.append(
                fail(
                    "secrets.server",
                    f"missing from the server_secret table: {', '.join(missing)}",
                    "restore the database from a backup (the migrations make them once)",
                )
            )
        else:
            findings.append(ok("secrets.server", f"{', '.join(SERVER_SECRETS)} present in the database"))
    return findings


# -- ports --------------------------------------------------------------------------


def _listens(state: State) -> list:
    found = []
    for backend in _active(state):
        try:
            found += backend.listens()
        except Exception as exc:  # noqa: BLE001  (a plugin's bug must not stop the report)
            log.warning("listens() of backend %s raised: %s", backend.name, exc)
    return found


def check_ports(state: State) -> list[Finding]:
    """Each address Postern listens on is free, or held by this Postern running now
    (its /healthz answers on server.bind); anything else holding it would stop start-up."""
    from postern.core.backends import Listen

    config = state.config
    wanted = [Listen("API (server.bind)", config.server.bind)]
    wanted += _listens(state)
    if config.mcp.enabled:
        wanted.append(Listen("MCP server (mcp.bind)", config.mcp.bind))
    findings = []
    seen: dict[tuple[str, int], str] = {}
    for listen in wanted:
        check = f"ports.{listen.name.split()[0].lower()}"
        try:
            host, port = _host_port(listen.address)
        except ValueError:
            findings.append(fail(check, f"{listen.name}: '{listen.address}' is not host:port", "fix the address"))
            continue
        clash = next((name for (h, p), name in seen.items() if p == port and _overlap(h, host)), None)
        seen[(host, port)] = listen.name
        if clash is not None:
            findings.append(
                fail(
                    check,
                    f"{listen.name} and {clash} are both configured on {listen.address}",
                    "give each its own port",
                )
            )
            continue
        findings.append(_port_finding(state, check, listen, host, port))
    return findings


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(address)
    return host.strip("[]"), int(port)


def _overlap(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")  # noqa: S104
    return a == b or a in wildcard or b in wildcard


def _port_finding(state: State, check: str, listen, host: str, port: int) -> Finding:
    error = _bind_error(host, port, udp=False) or (_bind_error(host, port, udp=True) if listen.udp else None)
    proto = "TCP and UDP" if listen.udp else "TCP"
    if error is None:
        return ok(check, f"{listen.name}: {listen.address} ({proto}) is free")
    if error.errno == errno.EADDRINUSE:
        if _postern_running(state):
            return ok(check, f"{listen.name}: {listen.address} is in use by the running Postern")
        from postern.core.ports import listening_pids

        holders = listening_pids(port)
        by = f" (held by pid {', '.join(map(str, holders))})" if holders else ""
        return fail(
            check,
            f"{listen.name}: {listen.address} is already in use by something other than Postern{by}",
            "stop what holds the port, or move this listener to a free one in the config",
        )
    if error.errno == errno.EACCES:
        return warn(
            check,
            f"{listen.name}: this user may not bind {listen.address} (a port under 1024)",
            "run postern serve as a user with CAP_NET_BIND_SERVICE, or use a port above 1023",
        )
    return fail(
        check,
        f"{listen.name}: cannot bind {listen.address}: {error.strerror}",
        "use an address of this host (0.0.0.0 for all)",
    )


def _bind_error(host: str, port: int, udp: bool) -> OSError | None:
    """Bind (and for TCP listen) as the listener would, with SO_REUSEADDR, and let go."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve '{host}': {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            if not udp:
                sock.listen(1)
    except OSError as exc:
        return exc
    return None


def _postern_running(state: State) -> bool:
    """This Postern's API answers /healthz on server.bind (asked once)."""
    if state.running is None:
        import httpx

        from postern.core.config import api_base_url

        try:
            resp = httpx.get(f"{api_base_url(state.config)}/healthz", timeout=2)
            state.running = "database" in resp.json()
        except (httpx.HTTPError, ValueError, TypeError):
            state.running = False
    return state.running


# -- backends -----------------------------------------------------------------------


def check_backend_probes(state: State, timeout: float = PROBE_TIMEOUT) -> list[Finding]:
    """What each active backend depends on answers (``Backend.probe``)."""
    findings = []
    for backend in _active(state):
        findings += probe_backend(state.postern, backend, timeout)
    return findings


def probe_backend(postern, backend, timeout: float) -> list[Finding]:
    """``backend.probe``, an exception turned into a FAIL."""
    try:
        return list(backend.probe(postern, timeout))
    except Exception as exc:  # noqa: BLE001  (what a probe raises is what it found)
        check = f"{backend.role}.{backend.name}"
        return [fail(check, f"the probe raised {type(exc).__name__}: {exc}", "see the log", type(exc).__name__)]


# -- DNS ----------------------------------------------------------------------------


def check_dns(state: State) -> list[Finding]:
    """The base mail domain's delegation, and each tenant domain's published records,
    as the configured resolvers see them, against what Postern publishes: the check of
    ``POST /v1/domains/{domain}/verify`` (``postern.core.domains``), nothing stored."""
    from postern.core import domains, zones
    from postern.core.errors import BackendUnavailable

    postern = state.postern
    if not state.database_ready or postern is None or "dns" in state.problems:
        return []
    try:
        settings = zones.settings_of(postern)
    except (BackendUnavailable, AttributeError):
        return [warn("dns", "no DNS backend that publishes zones: nothing to compare", "set [dns] backend")]
    base = state.config.mail.domain
    through = ", ".join(settings.resolvers) if settings.resolvers else "the system's resolvers"
    # A development base domain cannot be seen from the system's resolvers: say so, softly.
    soft = not settings.resolvers and base.rsplit(".", 1)[-1] in LOCAL_TLDS
    findings = []
    expected = [r for r in zones.delegation(settings, base) if r.rtype == "NS"]
    parent = base.split(".", 1)[1] if "." in base else "the root"
    try:
        checks = domains.check_records(postern, expected)
    except domains.ResolverUnreachable as exc:
        return [_resolver_down(exc, through)]
    names = ", ".join(r.value for r in expected)
    if all(c.ok for c in checks):
        findings.append(ok("dns.delegation", f"{base} is delegated to {names} (through {through})"))
    else:
        found = sorted({f for c in checks for f in c.found}) or [checks[0].error or "nothing"]
        findings.append(
            _soft(
                soft,
                "dns.delegation",
                f"{base}: NS through {through} is {', '.join(found)}; Postern's servers are {names}",
                f"at the registrar (or DNS host) of {parent}, delegate {base} to {names}, with glue "
                "addresses for servers named inside it (GET /v1/domains/{domain} lists them as delegations)",
            )
        )
    apexes = sorted(zones.tenant_zones(base))
    for apex in apexes[:MAX_DOMAINS]:
        try:
            checks = domains.lookup(postern, apex)
        except domains.ResolverUnreachable as exc:
            findings.append(_resolver_down(exc, through))
            break
        wrong = [c for c in checks if not c.ok]
        if not wrong:
            findings.append(ok("dns.records", f"{apex}: {len(checks)} record(s) published as Postern builds them"))
            continue
        said = "; ".join(
            f"{c.rtype} {c.name}: want '{_short(c.expected)}', found "
            + (", ".join(f"'{_short(f)}'" for f in c.found) or (c.error or "nothing"))
            for c in wrong
        )
        findings.append(
            _soft(
                soft,
                "dns.records",
                f"{apex}: {len(wrong)} of {len(checks)} record(s) differ: {said}",
                f"make sure {base} is delegated to Postern's DNS servers and that every server sharing the "
                f"database has the same [dns] settings; 'postern admin dns records {apex}' shows what is published",
            )
        )
    if len(apexes) > MAX_DOMAINS:
        findings.append(ok("dns.records", f"checked the first {MAX_DOMAINS} of {len(apexes)} tenant domains"))
    return findings


def _soft(soft: bool, check: str, detail: str, fix: str) -> Finding:
    if soft:
        return warn(check, detail + " (a development domain: the internet never sees it)", fix)
    return fail(check, detail, fix)


def _resolver_down(exc: Exception, through: str) -> Finding:
    return fail(
        "dns.resolver",
        f"no answer from {through}: {exc}",
        "check [dns.dns_builtin] resolvers and that this host reaches them",
    )


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# -- TLS ----------------------------------------------------------------------------


def check_certificates(state: State, now: dt.datetime | None = None) -> list[Finding]:
    """Each listener's TLS certificate: readable, valid now, not expiring within
    ``CERT_WARN_DAYS`` days."""
    findings = []
    for listen in _listens(state):
        if not listen.tls_cert:
            if listen.name.startswith("SMTP"):
                findings.append(ok("tls", f"{listen.name}: no certificate configured, STARTTLS is not offered"))
            continue
        findings.append(certificate_finding(listen.name, listen.tls_cert, now))
    return findings


def certificate_finding(name: str, path: str, now: dt.datetime | None = None) -> Finding:
    from cryptography import x509

    now = now or dt.datetime.now(dt.UTC)
    renew = f"renew the certificate in {path} (Postern reloads it at the next connection)"
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        return fail("tls", f"{name}: cannot read {path}: {exc.strerror}", "check the path and its permissions")
    except ValueError as exc:
        return fail("tls", f"{name}: {path} is not a PEM certificate: {exc}", "give the PEM file, chain after it")
    subject = cert.subject.rfc4514_string() or "(no subject)"
    ends = cert.not_valid_after_utc
    days = (ends - now).total_seconds() / 86400
    if cert.not_valid_before_utc > now:
        return fail("tls", f"{name}: {subject} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}", renew)
    if days < 0:
        return fail("tls", f"{name}: {subject} expired on {ends:%Y-%m-%d %H:%M} UTC", renew)
    if days < CERT_WARN_DAYS:
        return Finding("tls", WARN, f"{name}: {subject} expires in {days:.1f} days ({ends:%Y-%m-%d})", renew)
    return ok("tls", f"{name}: {subject} valid until {ends:%Y-%m-%d} ({int(days)} days)")
