"""``postern admin dns …``: the zones Postern serves, as the local operator sees them."""

from __future__ import annotations

import click

from postern.cli.context import INFO, emit, json_option, obtain_postern, run
from postern.core.principal import CLI
from postern.core.views import dns_record_json, domain_json


@click.group()
def dns():
    """DNS zones and records (what the dns backend serves)."""


@dns.command("records")
@click.argument("domain")
@json_option
@click.pass_context
def dns_records(ctx, domain, as_json):
    """Print the zone holding DOMAIN (the base domain or a tenant domain) as a zone file."""
    from postern.core import zones
    from postern.core.errors import NotFound
    from postern.core.names import InvalidName, normalise_domain

    postern = obtain_postern(ctx)
    base = postern.config.mail.domain
    try:
        apex = zones.zone_apex(base, normalise_domain(domain))
    except InvalidName as exc:
        raise click.BadParameter(str(exc), param_hint="DOMAIN") from None

    def build():
        zone = zones.build_zone(postern, apex, ensure_dkim=True) if apex else None
        if zone is None:
            raise NotFound(f"Postern serves no zone holding '{domain}' (base domain: {base})")
        return zone

    zone = run(ctx, build)
    data = {"zone": zone.apex, "serial": zone.serial, "records": [dns_record_json(r) for r in zone.records]}
    emit(as_json, data, zones.zone_file(zone).rstrip("\n"))


@dns.command("domains")
@json_option
@click.pass_context
def dns_domains(ctx, as_json):
    """List every mail domain, its zone and its last check."""
    from postern.core import domains

    postern = obtain_postern(ctx)
    views = run(ctx, lambda: domains.list_domains(postern, CLI, INFO))
    rows = [domain_json(v) for v in views]
    emit(as_json, rows, "\n".join(f"{r['domain']}\t{r['zone']}\t{r['status']}" for r in rows))
