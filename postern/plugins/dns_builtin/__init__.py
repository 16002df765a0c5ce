"""``dns_builtin``: the embedded authoritative DNS server for the base mail domain and
every tenant domain. The core decides the records (``postern.core.zones``); this
plugin serves them over UDP and TCP (``DnsBuiltin.services``: ``postern serve``
supervises it)."""

from postern.core.hookspecs import hookimpl
from postern.plugins.dns_builtin.backend import DnsBuiltin


@hookimpl
def postern_register_backends(register):
    register("dns", DnsBuiltin.name, DnsBuiltin)
