"""``dns_builtin``: the embedded authoritative DNS server for the base mail domain and
every tenant domain. The core decides the records (``postern.core.zones``); this
plugin serves them over UDP and TCP, and ``postern serve`` supervises it."""

from postern.core.hookspecs import hookimpl
from postern.core.services import Service
from postern.plugins.dns_builtin.backend import DnsBuiltin


@hookimpl
def postern_register_backends(register):
    register("dns", DnsBuiltin.name, DnsBuiltin)


@hookimpl
def postern_services(postern):
    if postern.config.role("dns").backend != DnsBuiltin.name:
        return []
    return [Service("dns", _run_dns, "authoritative DNS for the mail domains (UDP and TCP)")]


def _run_dns(postern) -> None:
    from postern.plugins.dns_builtin.server import run_dns  # dnslib loads only in the DNS process

    run_dns(postern)
