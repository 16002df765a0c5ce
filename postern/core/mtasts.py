"""MTA-STS (RFC 8461) and SMTP TLS reporting (RFC 8460) for the mail domains Postern
serves: the DNS records each mail domain publishes, and the policy file its
``mta-sts.<domain>`` host serves over HTTPS (docs/dns.md, "MTA-STS and TLS reporting").

A sending server that knows the policy refuses to deliver to ``<domain>`` except over
TLS, to an MX the policy names, with a certificate valid for it (``enforce``), or
delivers anyway and reports the failure (``testing``). Both need STARTTLS with a
publicly trusted certificate on the listener (docs/trust.md).
"""

from __future__ import annotations

import hashlib

from postern.core.backends import DnsRecord

MODES = ("none", "testing", "enforce")
HOST_LABEL = "mta-sts"


def policy_text(mode: str, mx: str, max_age: int) -> str:
    """The policy file: RFC 8461 3.2 key/value lines, each ended by CRLF."""
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


def policy_id(text: str) -> str:
    """The ``id=`` of the TXT record: changes whenever the policy does, as senders only
    fetch the policy again when it changes (1-32 alphanumerics)."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def records(settings, domain: str) -> list[DnsRecord]:
    """What ``domain`` publishes for MTA-STS and TLS reporting, by ``settings``
    (postern.core.zones.ZoneSettings): nothing for what is switched off."""
    found = []
    ttl = settings.ttl
    if settings.mta_sts_mode:
        text = policy_text(settings.mta_sts_mode, settings.mail_host, settings.mta_sts_max_age)
        found.append(DnsRecord(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={policy_id(text)}", ttl))
        addresses = settings.mta_sts_addresses or settings.mail_host_addresses
        host = f"{HOST_LABEL}.{domain}"
        found += [DnsRecord(host, "AAAA" if ":" in a else "A", a, ttl) for a in addresses]
    if settings.tls_rpt_rua:
        found.append(DnsRecord(f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua={settings.tls_rpt_rua}", ttl))
    return found
