"""The ``dns_builtin`` backend: its options, and the zone settings the core builds from."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postern.core import zonebell
from postern.core.backends import DnsProvider, Listen
from postern.core.mtasts import MODES
from postern.core.names import InvalidName, normalise_domain
from postern.core.options import at_least, between, host_port, option
from postern.core.services import Service
from postern.core.zones import DEFAULT_DMARC, Nameserver, ZoneSettings, resolver_address

DEFAULT_BIND = "127.0.0.1:5353"


def _name(value: str) -> str:
    """A host name, or a mailbox written user@domain (hostmaster) as DNS spells it."""
    if not value:
        return value
    try:
        return normalise_domain(value.replace("@", ".", 1))
    except InvalidName as exc:
        raise ValueError(f"is not a domain name: {exc}") from None


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    for address in values:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"holds '{address}', which is not an IP address") from None
    return values


def _mta_sts_mode(value: str) -> str:
    if value not in ("", *MODES):
        raise ValueError(f'must be one of {", ".join(MODES)}, or "" for no MTA-STS')
    return value


def _report_uris(value: str) -> str:
    """``rua=`` of TLS-RPT: comma-separated mailto: or https: URIs (RFC 8460 3)."""
    for uri in filter(None, (u.strip() for u in value.split(","))):
        if not uri.startswith(("mailto:", "https://")) or any(c.isspace() or c == ";" for c in uri):
            raise ValueError(f"holds '{uri}': give mailto: or https:// URIs, comma-separated")
    return value


def _label(value: str) -> str:
    if not value.replace("-", "").isalnum():
        raise ValueError("must be one DNS label")
    return value


@dataclass(frozen=True)
class DnsBuiltinOptions:
    """``[dns.dns_builtin]``. Names left empty default to ns1./ns2./mail./hostmaster.<base domain>."""

    bind: str = option(DEFAULT_BIND, check=host_port, help="host:port for UDP and TCP")
    ns1: str = option("", check=_name)
    ns1_addresses: tuple[str, ...] = option(("127.0.0.1",), check=_addresses)
    ns2: str = option("", check=_name)
    ns2_addresses: tuple[str, ...] = option(("127.0.0.1",), check=_addresses)
    mail_host: str = option("", check=_name)
    mail_host_addresses: tuple[str, ...] = option(("127.0.0.1",), check=_addresses)
    hostmaster: str = option("", check=_name)
    ttl: int = option(300, check=between(60, 86400, "seconds"))
    dkim_selector: str = option("postern", check=_label)
    dmarc: str = option(DEFAULT_DMARC)
    resolvers: tuple[str, ...] = option((), help='resolvers for lookups, "ip" or "ip:port"')
    max_udp_payload: int = option(1232, check=between(512, 4096))
    tcp_idle_timeout: int = option(10, check=at_least(1))
    max_tcp_connections: int = option(256, check=at_least(1))
    max_tcp_connections_per_client: int = option(32, check=at_least(1))
    refresh_seconds: int = option(60, check=at_least(1))
    mta_sts_mode: str = option(
        "", check=_mta_sts_mode, help='MTA-STS for every mail domain: "", none, testing, enforce'
    )
    mta_sts_max_age: int = option(604800, check=between(86400, 31557600, "seconds"))
    mta_sts_addresses: tuple[str, ...] = option((), check=_addresses, help="mta-sts.<domain> hosts; empty: mail host's")
    tls_rpt_rua: str = option("", check=_report_uris, help='TLS reports to, e.g. "mailto:tlsrpt@example.org"')

    def __post_init__(self):
        for resolver in self.resolvers:
            resolver_address(resolver)  # a ValueError naming 'resolvers'


class DnsBuiltin(DnsProvider):
    """Authoritative DNS for the base mail domain and every tenant domain, from the database."""

    name = "dns_builtin"
    description = "authoritative DNS server (dnslib), UDP and TCP, zones from Postern's database"
    options_class = DnsBuiltinOptions

    def __init__(self, options: DnsBuiltinOptions | None = None):
        self.options = options or DnsBuiltinOptions()

    def zone_settings(self, base_domain: str) -> ZoneSettings:
        o = self.options
        return ZoneSettings(
            nameservers=(
                Nameserver(o.ns1 or f"ns1.{base_domain}", o.ns1_addresses),
                Nameserver(o.ns2 or f"ns2.{base_domain}", o.ns2_addresses),
            ),
            mail_host=o.mail_host or f"mail.{base_domain}",
            mail_host_addresses=o.mail_host_addresses,
            hostmaster=o.hostmaster or f"hostmaster.{base_domain}",
            ttl=o.ttl,
            dkim_selector=o.dkim_selector.lower(),
            dmarc=o.dmarc,
            resolvers=o.resolvers,
            mta_sts_mode=o.mta_sts_mode,
            mta_sts_max_age=o.mta_sts_max_age,
            mta_sts_addresses=o.mta_sts_addresses,
            tls_rpt_rua=o.tls_rpt_rua,
        )

    def services(self, postern) -> list[Service]:
        return [Service("dns", run_dns_server, "authoritative DNS for the mail domains (UDP and TCP)")]

    def listens(self) -> list[Listen]:
        return [Listen("DNS server", self.options.bind, udp=True)]

    def zone_changed(self, zone: str) -> None:
        """Tell every dns_builtin server sharing the database to reload ``zone``."""
        zonebell.ring([zone])


def run_dns_server(postern) -> None:
    from postern.plugins.dns_builtin.server import run_dns  # dnslib loads only in the DNS process

    run_dns(postern)
