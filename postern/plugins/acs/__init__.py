"""``acs``: the send backend for Azure Communication Services email, and the DNS
records ACS needs for a custom domain, published only while it is the active send
backend. The Azure SDK is imported only when the backend is built."""

from postern.core.backends import DnsRecord
from postern.core.hookspecs import hookimpl
from postern.plugins.acs.sender import AcsSender


@hookimpl
def postern_register_backends(register):
    register("send", AcsSender.name, AcsSender)


def _active(postern) -> AcsSender | None:
    if postern.config.role("send").backend != AcsSender.name:
        return None
    return postern.backend("send")


@hookimpl
def postern_spf_mechanisms(postern):
    sender = _active(postern)
    return list(sender.options.spf) if sender else None


@hookimpl
def postern_dkim_records(postern, domain):
    """ACS signs with its own keys: CNAMEs to them at every mail domain of the zone,
    in place of Postern's own DKIM key."""
    sender = _active(postern)
    if sender is None:
        return None
    from postern.core import zones

    customer = zones.customer_of(postern.config.mail.domain, domain)
    names = zones.mail_domains(customer, domain) if customer is not None else [domain]
    return [
        DnsRecord(f"{selector}._domainkey.{name}", "CNAME", target, 3600)
        for name in names
        for selector, target in sender.options.dkim.items()
    ]


@hookimpl
def postern_dns_records(postern, domain):
    """The ownership TXT that ACS shows for each custom domain (``domain_verification``)."""
    sender = _active(postern)
    if sender is None:
        return None
    from postern.core.names import is_within

    return [
        DnsRecord(name, "TXT", value, 3600)
        for name, value in sender.options.domain_verification.items()
        if is_within(name, domain)
    ]
