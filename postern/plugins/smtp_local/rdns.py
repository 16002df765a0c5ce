"""``postern doctor`` in direct mode: the sending address's reverse DNS.

Receivers check that the connecting address has a PTR record, that it names the EHLO
host, and that the name resolves back to the address (forward-confirmed reverse DNS);
mail from an address that fails is refused or junked by most large providers. Postern
cannot set a PTR record (the address's owner does, often the hosting provider), so
this only checks and says what to ask for. Problems are warnings: mail still leaves.
"""

from __future__ import annotations

import dns.exception

from postern.core.doctor.report import Finding, ok, warn
from postern.plugins.smtp_local.mx import MxResolver

CHECK = "send.smtp_local.reverse_dns"


def reverse_dns(source_address: str, helo: str, resolver: str, timeout: float) -> list[Finding]:
    if not source_address:
        return [
            warn(
                CHECK,
                "direct mode without source_address: the reverse DNS of the sending address cannot be checked",
                "set [send.smtp_local] source_address to the public address mail leaves from",
                "unchecked",
            )
        ]
    lookups = MxResolver(resolver, timeout=timeout)
    fix = (
        f"ask the owner of {source_address} (often the hosting provider) for a PTR record naming {helo}, "
        f"and publish an A/AAAA record for {helo} pointing to {source_address}"
    )
    try:
        names = lookups.ptr(source_address)
    except (dns.exception.DNSException, ValueError) as exc:
        return [warn(CHECK, f"{source_address} has no PTR record ({type(exc).__name__})", fix, "no-ptr")]
    if helo.lower() not in names:
        return [
            warn(CHECK, f"the PTR record of {source_address} names {', '.join(names)}, not {helo}", fix, "ptr-name")
        ]
    try:
        back = lookups.addresses(helo)
    except Exception as exc:  # noqa: BLE001  (any lookup failure is the same finding)
        back, reason = [], str(exc)
    else:
        reason = ""
    if source_address not in back:
        detail = f"{helo} does not resolve back to {source_address}" + (f" ({reason})" if reason else "")
        return [warn(CHECK, detail, fix, "not-forward-confirmed")]
    return [ok(CHECK, f"{source_address} <-> {helo}: forward-confirmed reverse DNS")]
