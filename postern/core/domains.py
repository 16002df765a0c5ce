"""Domains as a tenant sees them: the records published, the delegation the parent
zone must hold, and a check of both through a resolver.

An agent key sees the domains its enrollment key allows (the grant a human made);
an org admin sees every mail domain of its tenant; operators see all. Anything
else, and anything that is not a domain at all, is the same 404.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from postern.core import audit
from postern.core.backends import DnsRecord
from postern.core.db import write_transaction
from postern.core.enrollment import allowed_domains
from postern.core.errors import BackendError, BackendUnavailable, NotFound, Unavailable
from postern.core.models import Customer, DomainCheck, EnrollmentKey, utcnow
from postern.core.names import InvalidName, normalise_domain
from postern.core.principal import Principal, RequestInfo
from postern.core.webhooks import events as webhook_events
from postern.core.zones import Zone, ZoneSettings, build_zone, delegation, settings_of, tenant_zones, zone_apex

log = logging.getLogger("postern.domains")

#: Seconds one lookup of a check may take, all retries included.
LOOKUP_LIFETIME = 4.0
#: Seconds a caller is asked to wait after the resolvers did not answer.
RESOLVER_RETRY_AFTER = 30


class ResolverUnreachable(BackendError):
    """No resolver answered at all (silence, a closed port, a refused connection): the
    check learned nothing about the domain. A resolver that answers SERVFAIL or REFUSED
    has answered, and that answer is the check's outcome."""


@dataclass(frozen=True)
class Delegation:
    """NS (and glue) records that ``parent`` must hold for ``zone``."""

    zone: str
    parent: str
    served_by_postern: bool
    records: tuple[DnsRecord, ...]


@dataclass(frozen=True)
class Check:
    name: str
    rtype: str
    expected: str
    found: tuple[str, ...]
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class DomainView:
    domain: str
    zone: str
    records: tuple[DnsRecord, ...]
    delegations: tuple[Delegation, ...]
    status: str  # unverified, verified, failed
    checked_at: object = None
    checks: tuple[Check, ...] = ()


def visible_domains(principal: Principal, base: str) -> list[str]:
    if principal.kind == "agent":
        return allowed_domains(EnrollmentKey.get_by_id(principal.enrollment_id))
    if principal.is_operator:
        apexes = tenant_zones(base)
    else:
        apexes = [f"{Customer.get_by_id(principal.customer_id).label}.{base}"]
    found = []
    for apex in apexes:
        found.append(apex)
        for (allowed,) in _enrollment_domains(apex, base):
            found.extend(d for d in json.loads(allowed) if d not in found)
    return found


def _enrollment_domains(apex: str, base: str):
    customer = Customer.get_or_none(Customer.label == apex[: -len(base) - 1])
    if customer is None:
        return []
    return EnrollmentKey.select(EnrollmentKey.allowed_domains).where(EnrollmentKey.customer == customer.id).tuples()


def list_domains(postern, principal: Principal, info: RequestInfo) -> list[DomainView]:
    base = postern.config.mail.domain
    views = [_view(postern, domain) for domain in visible_domains(principal, base)]
    audit.record_read("domain.list", principal=principal, info=info)
    return views


def get_domain(postern, principal: Principal, info: RequestInfo, domain: str) -> DomainView:
    name = _visible_name(postern, principal, domain)
    view = _view(postern, name)
    audit.record_read("domain.read", principal=principal, info=info, target=name)
    return view


def _visible_name(postern, principal: Principal, domain: str) -> str:
    try:
        name = normalise_domain(domain)
    except InvalidName:
        name = None
    if name is None or name not in visible_domains(principal, postern.config.mail.domain):
        raise NotFound(f"no domain '{domain[:253]}'")
    return name


def _settings(postern) -> ZoneSettings:
    try:
        return settings_of(postern)
    except BackendUnavailable as exc:
        raise Unavailable(f"no DNS backend: {exc}", code="no_dns_backend") from exc


def _zone(postern, domain: str, ensure_dkim: bool = True) -> Zone:
    _settings(postern)  # a clear 503 when no dns backend is installed
    zone = build_zone(postern, zone_apex(postern.config.mail.domain, domain), ensure_dkim=ensure_dkim)
    if zone is None:  # the tenant was deleted under us
        raise NotFound(f"no domain '{domain}'")
    return zone


def _view(postern, domain: str, ensure_dkim: bool = True) -> DomainView:
    zone = _zone(postern, domain, ensure_dkim)
    settings = _settings(postern)
    base = postern.config.mail.domain
    wanted = {zone.apex, domain, f"_dmarc.{domain}"}
    if domain == zone.apex:
        wanted.add(f"*.{zone.apex}")
    records = tuple(r for r in zone.records if r.name in wanted or r.name.endswith(f"._domainkey.{zone.apex}"))
    base_parent = base.split(".", 1)[1] if "." in base else ""
    delegations = (
        Delegation(base, base_parent, False, tuple(delegation(settings, base))),
        Delegation(zone.apex, base, True, tuple(delegation(settings, zone.apex))),
    )
    check = DomainCheck.get_or_none(DomainCheck.domain == domain)
    if check is None:
        return DomainView(domain, zone.apex, records, delegations, "unverified")
    checks = tuple(Check(**{**c, "found": tuple(c["found"])}) for c in json.loads(check.checks))
    return DomainView(domain, zone.apex, records, delegations, check.status, check.checked_at, checks)


def verify_domain(postern, principal: Principal, info: RequestInfo, domain: str) -> DomainView:
    """Look the domain's delegation and records up through the configured resolvers,
    store the outcome, and return the domain with it."""
    name = _visible_name(postern, principal, domain)
    view = _view(postern, name)
    try:
        checks = _run_checks(_settings(postern), _expected(view))
    except ResolverUnreachable as exc:
        # Says nothing about the domain: keep its last status rather than turn a verified
        # domain into a failed one because our resolver was down.
        raise Unavailable(
            f"the resolver did not answer ({exc}); nothing was checked or stored, retry later",
            code="resolver_unreachable",
            retry_after=RESOLVER_RETRY_AFTER,
        ) from exc
    status = "verified" if checks and all(c.ok for c in checks) else "failed"
    customer_id = Customer.get(Customer.label == view.zone.split(".", 1)[0]).id
    with write_transaction():
        payload = json.dumps([{**c.__dict__, "found": list(c.found)} for c in checks])
        before = DomainCheck.get_or_none(DomainCheck.domain == name)
        if status == "verified" and (before is None or before.status != "verified"):
            now = webhook_events.timestamp(utcnow())
            data = {"domain": name, "zone": view.zone, "status": status, "checked_at": now}
            webhook_events.domain_event(postern, "domain.verified", customer_id, name, data)
        updated = (
            DomainCheck.update(status=status, checks=payload, checked_at=utcnow())
            .where(DomainCheck.domain == name)
            .execute()
        )
        if not updated:
            DomainCheck.create(domain=name, customer=customer_id, status=status, checks=payload)
        audit.record("domain.verify", principal=principal, info=info, target=name, code=status)
    return _view(postern, name)


def lookup(postern, domain: str) -> list[Check]:
    """The checks ``verify_domain`` makes of ``domain`` (a mail domain Postern serves),
    without storing them or making a DKIM key: for ``postern doctor``. Raises
    ``ResolverUnreachable`` when no resolver answered, ``NotFound`` for no such domain."""
    return _run_checks(_settings(postern), _expected(_view(postern, domain, ensure_dkim=False)))


def check_records(postern, records: list[DnsRecord]) -> list[Check]:
    """Look ``records`` up through the configured resolvers, one ``Check`` each (the
    delegation of the base mail domain, say). Raises ``ResolverUnreachable``."""
    return _run_checks(_settings(postern), list(records))


def _expected(view: DomainView) -> list[DnsRecord]:
    """What a check looks up: the records the parent and the zone must serve for the
    domain (its zone's NS, not the wildcards)."""
    expected = [r for r in view.records if r.rtype in ("NS", "MX", "TXT", "CNAME") and not r.name.startswith("*.")]
    return [r for r in expected if r.rtype != "NS" or r.name == view.zone]


def _run_checks(settings: ZoneSettings, expected: list[DnsRecord]) -> list[Check]:
    resolver = _resolver(settings)
    by_question: dict[tuple[str, str], list[DnsRecord]] = {}
    for record in expected:
        by_question.setdefault((record.name, record.rtype), []).append(record)
    checks = []
    for (name, rtype), records in by_question.items():
        found, error = _lookup(resolver, name, rtype)
        for record in records:
            want = _normal(rtype, record.value)
            checks.append(Check(name, rtype, record.value, tuple(found), want in found, error))
    return checks


def _resolver(settings: ZoneSettings):
    import dns.nameserver
    import dns.resolver

    from postern.core.zones import resolver_address

    resolver = dns.resolver.Resolver(configure=not settings.resolvers)
    if settings.resolvers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*resolver_address(r)) for r in settings.resolvers]
    resolver.lifetime = LOOKUP_LIFETIME
    resolver.cache = None
    return resolver


def _lookup(resolver, name: str, rtype: str) -> tuple[list[str], str | None]:
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, rtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return [], "NXDOMAIN"
    except dns.resolver.NoNameservers as exc:
        # Each entry: (server, tcp, port, exception or None, the answer it gave or None).
        if all(answer is None for *_, answer in exc.kwargs.get("errors", [])):
            raise ResolverUnreachable(f"{name} {rtype}: {str(exc)[:200]}") from exc
        return [], f"no nameserver answered: {str(exc)[:200]}"
    except dns.exception.Timeout as exc:
        raise ResolverUnreachable(f"{name} {rtype}: no answer within {LOOKUP_LIFETIME:g} s") from exc
    except dns.exception.DNSException as exc:
        return [], f"{type(exc).__name__}: {str(exc)[:200]}"
    if answer.rrset is None:
        return [], "no such record"
    if rtype == "TXT":
        return [b"".join(rd.strings).decode(errors="replace") for rd in answer.rrset], None
    return [_normal(rtype, rd.to_text()) for rd in answer.rrset], None


def _normal(rtype: str, value: str) -> str:
    """A comparable form: names lower-case without the final dot."""
    if rtype == "TXT":
        return value
    return " ".join(part.lower().rstrip(".") for part in value.split())
