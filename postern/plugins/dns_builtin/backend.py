"""The ``dns_builtin`` backend: its options, and the zone settings the core builds from."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from postern.core import zonebell
from postern.core.backends import DnsProvider
from postern.core.names import InvalidName, normalise_domain
from postern.core.zones import DEFAULT_DMARC, Nameserver, ZoneSettings, resolver_address

DEFAULT_BIND = "127.0.0.1:5353"


class DnsBuiltin(DnsProvider):
    """Authoritative DNS for the base mail domain and every tenant domain, from the database."""

    name = "dns_builtin"
    description = "authoritative DNS server (dnslib), UDP and TCP, zones from Postern's database"
    #: option -> (type, default). Names left empty default to ns1./ns2./mail.<base domain>.
    OPTIONS: dict[str, tuple[type, Any]] = {
        "bind": (str, DEFAULT_BIND),
        "ns1": (str, ""),
        "ns1_addresses": (list, ["127.0.0.1"]),
        "ns2": (str, ""),
        "ns2_addresses": (list, ["127.0.0.1"]),
        "mail_host": (str, ""),
        "mail_host_addresses": (list, ["127.0.0.1"]),
        "hostmaster": (str, ""),
        "ttl": (int, 300),
        "dkim_selector": (str, "postern"),
        "dmarc": (str, DEFAULT_DMARC),
        "resolvers": (list, []),
        "max_udp_payload": (int, 1232),
        "tcp_idle_timeout": (int, 10),
        "max_tcp_connections": (int, 256),
        "max_tcp_connections_per_client": (int, 32),
        "refresh_seconds": (int, 60),
    }

    def __init__(self, **options: Any):
        for key, (_, default) in self.OPTIONS.items():
            setattr(self, key, options.get(key, default))

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> DnsBuiltin:
        for key, value in options.items():
            if key not in cls.OPTIONS:
                raise ValueError(f"unknown option '{key}'; known: {', '.join(cls.OPTIONS)}")
            kind = cls.OPTIONS[key][0]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"'{key}' must be a {kind.__name__}")
            if kind is list and not all(isinstance(v, str) for v in value):
                raise ValueError(f"'{key}' must be a list of strings")
        backend = cls(**options)
        host, _, port = backend.bind.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bind must be host:port, got '{backend.bind}'")
        for key in ("ns1", "ns2", "mail_host", "hostmaster"):
            if getattr(backend, key):
                try:
                    setattr(backend, key, normalise_domain(getattr(backend, key).replace("@", ".", 1)))
                except InvalidName as exc:
                    raise ValueError(f"'{key}': {exc}") from None
        for key in ("ns1_addresses", "ns2_addresses", "mail_host_addresses"):
            for address in getattr(backend, key):
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(f"'{key}': '{address}' is not an IP address") from None
        for resolver in backend.resolvers:
            resolver_address(resolver)
        if not 512 <= backend.max_udp_payload <= 4096:
            raise ValueError("max_udp_payload must be from 512 to 4096")
        if not 60 <= backend.ttl <= 86400:
            raise ValueError("ttl must be from 60 to 86400 seconds")
        if backend.tcp_idle_timeout < 1 or backend.max_tcp_connections < 1 or backend.refresh_seconds < 1:
            raise ValueError("tcp_idle_timeout, max_tcp_connections and refresh_seconds must be at least 1")
        if backend.max_tcp_connections_per_client < 1:
            raise ValueError("max_tcp_connections_per_client must be at least 1")
        if not backend.dkim_selector.replace("-", "").isalnum():
            raise ValueError("dkim_selector must be one DNS label")
        return backend

    def zone_settings(self, base_domain: str) -> ZoneSettings:
        return ZoneSettings(
            nameservers=(
                Nameserver(self.ns1 or f"ns1.{base_domain}", tuple(self.ns1_addresses)),
                Nameserver(self.ns2 or f"ns2.{base_domain}", tuple(self.ns2_addresses)),
            ),
            mail_host=self.mail_host or f"mail.{base_domain}",
            mail_host_addresses=tuple(self.mail_host_addresses),
            hostmaster=self.hostmaster or f"hostmaster.{base_domain}",
            ttl=self.ttl,
            dkim_selector=self.dkim_selector.lower(),
            dmarc=self.dmarc,
            resolvers=tuple(self.resolvers),
        )

    def zone_changed(self, zone: str) -> None:
        """Tell every dns_builtin server sharing the database to reload ``zone``."""
        zonebell.ring([zone])
