"""Which DNS zones Postern serves, and which records each one needs.

Zones: the base mail domain, and one per tenant, ``<label>.<base>``. A tenant zone
publishes SOA and NS, MX at its apex and a wildcard MX (so nested labels receive),
SPF (mechanisms from the active send backend's ``spf_mechanisms``), DKIM at
``<selector>._domainkey`` (Postern's own key, unless the active send backend's
``dkim_records`` gives its own), DMARC at ``_dmarc``, and the same MX/SPF/DMARC at
every mail domain below the apex that an enrollment key allows or an inbox uses (an
explicit name there would otherwise hide the wildcard). The active backends add more
through their ``dns_records``, any plugin through ``postern_dns_records``. The DNS
backend turns these records into answers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
from dataclasses import dataclass

import peewee

from postern.core import dkim, mtasts
from postern.core.backends import DnsRecord
from postern.core.errors import BackendUnavailable
from postern.core.models import Customer, DkimKey, EnrollmentKey, Inbox
from postern.core.names import is_within

log = logging.getLogger("postern.zones")

DEFAULT_DMARC = "v=DMARC1; p=quarantine; adkim=r; aspf=r"
#: SOA timers: refresh, retry, expire (seconds). Postern's servers share one database
#: and never transfer zones, so these matter only to tools that read them.
SOA_TIMERS = (3600, 600, 1209600)


@dataclass(frozen=True)
class Nameserver:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ZoneSettings:
    """What every zone is built from besides the database (from the dns backend's config)."""

    nameservers: tuple[Nameserver, ...]
    mail_host: str
    mail_host_addresses: tuple[str, ...]
    hostmaster: str
    ttl: int = 300
    dkim_selector: str = "postern"
    dmarc: str = DEFAULT_DMARC
    #: "ip" or "ip:port" of resolvers the domain check asks; empty: the system's.
    resolvers: tuple[str, ...] = ()
    #: MTA-STS mode published for every mail domain (none | testing | enforce); '' off.
    mta_sts_mode: str = ""
    mta_sts_max_age: int = 604800
    #: Addresses of the ``mta-sts.<domain>`` hosts (the HTTPS front of the API); empty:
    #: the mail host's.
    mta_sts_addresses: tuple[str, ...] = ()
    #: Where TLS reports go (``rua=`` of ``_smtp._tls``), e.g. "mailto:tlsrpt@example.org"; '' off.
    tls_rpt_rua: str = ""


@dataclass(frozen=True)
class Zone:
    apex: str
    customer_id: str | None
    serial: int
    mail_domains: tuple[str, ...]
    records: tuple[DnsRecord, ...]

    def at(self, name: str) -> list[DnsRecord]:
        return [r for r in self.records if r.name == name]


def settings_of(postern) -> ZoneSettings:
    """The active dns backend's settings (raises ``BackendUnavailable`` without one)."""
    return postern.backend("dns").zone_settings(postern.config.mail.domain)


def zone_apex(base: str, name: str) -> str | None:
    """The apex of the zone ``name`` would belong to, or None outside the base domain."""
    if name == base:
        return base
    if not name.endswith("." + base):
        return None
    return f"{name[: -len(base) - 1].rsplit('.', 1)[-1]}.{base}"


def customer_of(base: str, apex: str) -> Customer | None:
    if apex == base or zone_apex(base, apex) != apex:
        return None
    return Customer.get_or_none(Customer.label == apex[: -len(base) - 1])


def tenant_zones(base: str) -> list[str]:
    return [f"{label}.{base}" for (label,) in Customer.select(Customer.label).tuples()]


def mail_domains(customer: Customer, apex: str) -> list[str]:
    """The tenant's apex, every domain its enrollment keys allow and every inbox domain.

    An inbox's domain is always one its enrollment key allows, published (and rung)
    when the key was made; inboxes are read too so a key's record never hides one."""
    found = {apex}
    for (allowed,) in (
        EnrollmentKey.select(EnrollmentKey.allowed_domains).where(EnrollmentKey.customer == customer.id).tuples()
    ):
        found.update(json.loads(allowed))
    found.update(d for (d,) in Inbox.select(Inbox.domain).where(Inbox.customer == customer.id).distinct().tuples())
    return sorted((d for d in found if is_within(d, apex)), key=lambda d: (d.count("."), d))


def build_zone(postern, apex: str, *, config=None, ensure_dkim: bool = False) -> Zone | None:
    """The zone at ``apex`` from the database, or None when Postern serves no such zone.

    ``ensure_dkim`` generates the tenant's DKIM key if it has none yet (it needs the
    key-encryption key, so only sending and API hosts do it, never a bare DNS server).
    """
    config = config or postern.config
    base = config.mail.domain
    settings = settings_of(postern)
    if apex == base:
        return _base_zone(postern, settings, base)
    customer = customer_of(base, apex)
    if customer is None:
        return None
    ttl = settings.ttl
    domains = mail_domains(customer, apex)
    spf = spf_value(postern, apex)
    records = _ns_records(settings, apex)
    records += [DnsRecord(f"*.{apex}", "MX", f"10 {settings.mail_host}", ttl), DnsRecord(f"*.{apex}", "TXT", spf, ttl)]
    for domain in domains:
        records += [
            DnsRecord(domain, "MX", f"10 {settings.mail_host}", ttl),
            DnsRecord(domain, "TXT", spf, ttl),
            DnsRecord(f"_dmarc.{domain}", "TXT", settings.dmarc, ttl),
            *mtasts.records(settings, domain),
        ]
    dkim_records, key_row = _dkim_records(postern, config, settings, customer, apex, ensure_dkim)
    records += dkim_records + _extras(postern, apex)
    serial = _serial(customer, key_row)
    records.insert(0, _soa(settings, apex, serial))
    return Zone(apex, customer.id, serial, tuple(domains), tuple(_unique(records)))


def _dkim_records(postern, config, settings: ZoneSettings, customer: Customer, apex: str, ensure: bool):
    """The active send backend's DKIM records if it signs with keys of its own, else
    Postern's own key (made now when ``ensure``), else none yet. Returns (records,
    Postern's key row or None)."""
    sender = postern.active("send")
    records = sender.dkim_records(postern, apex) if sender is not None else None
    if records is not None:
        return list(records), None
    if ensure:
        key_row = dkim.ensure_key(config, customer, apex, settings.dkim_selector)
    else:
        key_row = DkimKey.get_or_none(DkimKey.domain == apex)
    if key_row is None:
        return [], None
    name = f"{key_row.selector}._domainkey.{apex}"
    return [DnsRecord(name, "TXT", dkim.txt_value(key_row), settings.ttl)], key_row


def _base_zone(postern, settings: ZoneSettings, base: str) -> Zone:
    records = _ns_records(settings, base)
    hosts = [(ns.name, ns.addresses) for ns in settings.nameservers]
    hosts.append((settings.mail_host, settings.mail_host_addresses))
    for host, addresses in hosts:
        # Only names this zone answers for: deeper ones belong to a tenant's zone.
        if is_within(host, base) and zone_apex(base, host) in (base, host):
            records += [DnsRecord(host, "AAAA" if ":" in a else "A", a, settings.ttl) for a in addresses]
    records += _extras(postern, base)
    serial = 1  # the base zone changes only with the config
    records.insert(0, _soa(settings, base, serial))
    return Zone(base, None, serial, (), tuple(_unique(records)))


def _ns_records(settings: ZoneSettings, apex: str) -> list[DnsRecord]:
    return [DnsRecord(apex, "NS", ns.name, settings.ttl) for ns in settings.nameservers]


def _soa(settings: ZoneSettings, apex: str, serial: int) -> DnsRecord:
    refresh, retry, expire = SOA_TIMERS
    primary = settings.nameservers[0].name
    value = f"{primary} {settings.hostmaster} {serial} {refresh} {retry} {expire} {settings.ttl}"
    return DnsRecord(apex, "SOA", value, settings.ttl)


def spf_value(postern, domain: str) -> str:
    sender = postern.active("send")
    mechanisms: list[str] = []
    for mechanism in sender.spf_mechanisms(postern, domain) if sender is not None else ():
        if mechanism not in mechanisms:
            mechanisms.append(mechanism)
    return " ".join(["v=spf1", *mechanisms, "-all"])


def _extras(postern, apex: str) -> list[DnsRecord]:
    """What the active backends need in the zone, then what any plugin adds."""
    found = []
    batches = [backend.dns_records(postern, apex) for backend in postern.active_backends()]
    batches += postern.hook.postern_dns_records(postern=postern, domain=apex)
    for batch in batches:
        for record in batch or ():
            name = record.name.lower().rstrip(".")
            if not is_within(name, apex):
                log.warning("ignored a plugin record %s %s outside zone %s", record.name, record.rtype, apex)
                continue
            found.append(DnsRecord(name, record.rtype.upper(), record.value, record.ttl))
    return found


def _serial(customer: Customer, key_row) -> int:
    """Seconds of the newest change a zone shows (RFC 1982 arithmetic stays valid to 2106).

    Deletions do not move it; nothing reads zones by transfer, so nothing relies on it."""
    stamps = [customer.created_at]
    for model, field in ((Inbox, Inbox.created_at), (EnrollmentKey, EnrollmentKey.created_at)):
        newest = model.select(peewee.fn.MAX(field)).where(model.customer == customer.id).scalar()
        if newest is not None:
            stamps.append(newest)
    if key_row is not None:
        stamps.append(key_row.created_at)
    # SQLite hands an aggregate of a datetime column back as text.
    newest = max(dt.datetime.fromisoformat(s) if isinstance(s, str) else s for s in stamps)
    return int(newest.replace(tzinfo=dt.UTC).timestamp())


def _unique(records: list[DnsRecord]) -> list[DnsRecord]:
    seen, kept = set(), []
    for record in records:
        key = (record.name, record.rtype, record.value)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def mta_sts_policy(postern, host: str) -> str | None:
    """The MTA-STS policy file ``host`` (``mta-sts.<mail domain>``) serves, or None when
    the name is none of Postern's mail domains' or MTA-STS is off (postern.core.mtasts)."""
    label, _, domain = host.strip().lower().rstrip(".").split(":", 1)[0].partition(".")
    if label != mtasts.HOST_LABEL or not domain:
        return None
    try:
        settings = settings_of(postern)
    except BackendUnavailable:
        return None
    base = postern.config.mail.domain
    apex = zone_apex(base, domain)
    customer = customer_of(base, apex) if apex else None
    if not settings.mta_sts_mode or customer is None or domain not in mail_domains(customer, apex):
        return None
    return mtasts.policy_text(settings.mta_sts_mode, settings.mail_host, settings.mta_sts_max_age)


def delegation(settings: ZoneSettings, apex: str) -> list[DnsRecord]:
    """What the parent zone must hold so resolvers find ``apex`` on Postern's servers:
    NS records, and glue addresses for nameservers named inside ``apex`` itself."""
    records = [DnsRecord(apex, "NS", ns.name, settings.ttl) for ns in settings.nameservers]
    for ns in settings.nameservers:
        if is_within(ns.name, apex):
            records += [DnsRecord(ns.name, "AAAA" if ":" in a else "A", a, settings.ttl) for a in ns.addresses]
    return records


def zone_file(zone: Zone) -> str:
    """The zone in master-file format (RFC 1035), long TXT values split into strings."""
    lines = [f"$ORIGIN {zone.apex}.", f"; serial {zone.serial}"]
    for record in zone.records:
        lines.append(f"{record.name}.\t{record.ttl}\tIN\t{record.rtype}\t{presentation(record)}")
    return "\n".join(lines) + "\n"


def presentation(record: DnsRecord) -> str:
    if record.rtype == "TXT":
        data = record.value.encode()
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        return " ".join('"' + "".join(_txt_char(b) for b in chunk) + '"' for chunk in chunks)
    if record.rtype in ("NS", "CNAME", "MX", "SOA"):
        parts = record.value.split()
        names = {"NS": [0], "CNAME": [0], "MX": [1], "SOA": [0, 1]}[record.rtype]
        return " ".join(p + "." if i in names and not p.endswith(".") else p for i, p in enumerate(parts))
    return record.value


def _txt_char(byte: int) -> str:
    if byte in (0x22, 0x5C):  # quote and backslash
        return "\\" + chr(byte)
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\{byte:03d}"


def resolver_address(value: str) -> tuple[str, int]:
    """``"ip"`` or ``"ip:port"`` / ``"[v6]:port"`` as (ip, port)."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
    elif value.count(":") == 1:
        host, _, rest = value.partition(":")
        if not rest.isdigit():
            raise ValueError(f"'resolvers': '{value}' is not ip or ip:port")
        port = int(rest)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'resolvers': '{value}' is not ip or ip:port") from None
    return host, port
