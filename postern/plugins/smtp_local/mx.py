"""Where mail for a domain goes: its MX hosts in preference order, and their addresses.

The direct-delivery transport (``direct.py``) asks here before every attempt. A
lookup's outcome decides the recipient's fate, so failures are classified the way the
core reads them: ``PermanentFailure`` when the domain can never take mail (NXDOMAIN,
RFC 7505 null MX, no MX and no address), ``TemporaryFailure`` when DNS could not say
(SERVFAIL, timeout): the outbox retries those on its schedule.
"""

from __future__ import annotations

import dns.exception
import dns.resolver
import dns.reversename

from postern.core.errors import PermanentFailure, TemporaryFailure


def _nameserver(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"resolver must be host:port (e.g. 127.0.0.1:53), not {value!r}")
    return host, int(port)


class MxResolver:
    """DNS lookups for delivery: through ``resolver`` ("host:port", e.g. a local
    unbound or a test server) when given, else the system's resolvers."""

    def __init__(self, resolver: str = "", *, timeout: float = 10.0, cache: bool = True):
        if resolver:
            host, port = _nameserver(resolver)
            self._dns = dns.resolver.Resolver(configure=False)
            self._dns.nameservers = [host]
            self._dns.port = port
        else:
            self._dns = dns.resolver.Resolver()
        # lifetime bounds one whole lookup (every retry and server); the transport's
        # deadline bounds the attempt as a whole.
        self._dns.lifetime = timeout
        self._dns.timeout = min(timeout, 2.0)
        if cache:
            # Answers kept for their TTL: without it each message costs four lookups (TXT,
            # MX, A, AAAA), two thirds of direct delivery's time (bench/outbound_delivery.py).
            self._dns.cache = dns.resolver.LRUCache(4096)

    def destinations(self, domain: str) -> list[str]:
        """The hosts to try for ``domain``, best first: MX ordered by (preference,
        name), so the order is stable. No MX record but an address: the domain
        itself (RFC 5321 5.1, the implicit MX)."""
        domain = domain.lower().rstrip(".")
        try:
            answer = self._dns.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise PermanentFailure(f"{domain}: no such domain (NXDOMAIN)", code="nxdomain") from None
        except dns.resolver.NoAnswer:
            if self.addresses(domain):
                return [domain]
            raise PermanentFailure(f"{domain}: no MX record and no address", code="no_mx") from None
        except dns.exception.DNSException as exc:  # SERVFAIL (NoNameservers), timeout
            raise TemporaryFailure(f"{domain}: MX lookup failed: {exc}", code="dns") from None
        records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer)
        # RFC 7505: a single MX of "." says the domain accepts no mail at all. A "."
        # among other MX records is a misconfiguration; the real hosts are still tried.
        if len(records) == 1 and records[0][1] in ("", "."):
            raise PermanentFailure(f"{domain} accepts no mail (null MX, RFC 7505)", code="null_mx")
        return [name for _, name in records if name not in ("", ".")]

    def addresses(self, host: str) -> list[str]:
        """``host``'s IPv4 then IPv6 addresses. IPv4 first: many self-hosted machines
        have IPv6 without working outbound routes or reverse DNS, and a refused address
        costs only a try at the next. A name without addresses gives []; a lookup that
        could not finish raises ``TemporaryFailure`` unless the other family answered."""
        found: list[str] = []
        failed: Exception | None = None
        for qtype in ("A", "AAAA"):
            try:
                found += [r.to_text() for r in self._dns.resolve(host, qtype)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                failed = exc
        if not found and failed is not None:
            raise TemporaryFailure(f"{host}: address lookup failed: {failed}", code="dns")
        return found

    def ptr(self, address: str) -> list[str]:
        """The names the PTR records of ``address`` give (lower-case, no final dot);
        raises ``dns.exception.DNSException`` when there are none or DNS cannot say."""
        answer = self._dns.resolve(dns.reversename.from_address(address), "PTR")
        return [r.target.to_text().rstrip(".").lower() for r in answer]

    def txt(self, name: str) -> list[str] | None:
        """The TXT strings at ``name`` (each record's strings joined); None when the
        lookup could not finish, [] when there is no such record."""
        try:
            answer = self._dns.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException:
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def destinations(domain: str, *, resolver: str = "", timeout: float = 10.0) -> list[str]:
    """``MxResolver(resolver).destinations(domain)``, for one-off lookups."""
    return MxResolver(resolver, timeout=timeout).destinations(domain)
