"""Whether an IP address is a public destination a webhook may call.

Decided by Postern's own copy of IANA's special-purpose address registries, not by
``ipaddress.is_global``, whose tables differ between Python patch releases (3.11.7 calls
``64:ff9b:1::1``, ``fec0::1``, ``192.0.0.8`` and ``192.88.99.1`` global). The most specific
registry row holding an address decides; an address in no row is public, except IPv6
outside the global unicast space ``2000::/3``, deprecated ranges and multicast.

An IPv6 address that stands for an IPv4 one (IPv4-mapped and -translated, IPv4-compatible,
NAT64, 6to4, Teredo) is judged by the IPv4 address it carries, so ``64:ff9b::127.0.0.1``
or ``2002:7f00:1::`` cannot reach loopback through a translator or relay.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address, ip_network

# (network, globally reachable) from https://www.iana.org/assignments/iana-ipv4-special-registry
# and .../iana-ipv6-special-registry (2025). Rows whose column is N/A are handled below:
# 192.88.99.0/24 and 2001:10::/28 are deprecated (refused), Teredo and 6to4 carry IPv4.
IPV4_SPECIAL = [
    ("0.0.0.0/8", False),
    ("10.0.0.0/8", False),
    ("100.64.0.0/10", False),
    ("127.0.0.0/8", False),
    ("169.254.0.0/16", False),
    ("172.16.0.0/12", False),
    ("192.0.0.0/24", False),
    ("192.0.0.0/29", False),
    ("192.0.0.8/32", False),
    ("192.0.0.9/32", True),
    ("192.0.0.10/32", True),
    ("192.0.0.170/32", False),
    ("192.0.0.171/32", False),
    ("192.0.2.0/24", False),
    ("192.31.196.0/24", True),
    ("192.52.193.0/24", True),
    ("192.168.0.0/16", False),
    ("192.175.48.0/24", True),
    ("198.18.0.0/15", False),
    ("198.51.100.0/24", False),
    ("203.0.113.0/24", False),
    ("240.0.0.0/4", False),
    ("255.255.255.255/32", False),
]
IPV6_SPECIAL = [
    ("::1/128", False),
    ("::/128", False),
    ("::ffff:0:0/96", False),
    ("64:ff9b::/96", True),
    ("64:ff9b:1::/48", False),
    ("100::/64", False),
    ("100:0:0:1::/64", False),
    ("2001::/23", False),
    ("2001:1::1/128", True),
    ("2001:1::2/128", True),
    ("2001:1::3/128", True),
    ("2001:2::/48", False),
    ("2001:3::/32", True),
    ("2001:4:112::/48", True),
    ("2001:20::/28", True),
    ("2001:30::/28", True),
    ("2001:db8::/32", False),
    ("2620:4f:8000::/48", True),
    ("3fff::/20", False),
    ("5f00::/16", False),
    ("fc00::/7", False),
    ("fe80::/10", False),
]
# Never a destination: multicast, and deprecated ranges (6to4 relay anycast, ORCHID v1,
# site-local, 6bone) that may still be routed somewhere private.
NEVER = ["224.0.0.0/4", "192.88.99.0/24", "ff00::/8", "2001:10::/28", "fec0::/10", "3ffe::/16"]

_ROWS = sorted(
    [(ip_network(net), reachable) for net, reachable in IPV4_SPECIAL + IPV6_SPECIAL]
    + [(ip_network(net), False) for net in NEVER],
    key=lambda row: -row[0].prefixlen,  # most specific first
)
GLOBAL_UNICAST_V6 = ip_network("2000::/3")

# IPv6 forms whose low 32 bits are an IPv4 address: mapped, translated (RFC 2765),
# compatible (deprecated; ``::`` and ``::1`` give 0.0.0.0 and 0.0.0.1, refused either way),
# and the NAT64 well-known prefix.
_LOW_32 = [ip_network(n) for n in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")]
NAT64_LOCAL = ip_network("64:ff9b:1::/48")
# RFC 6052 §2.2: where the IPv4 address sits for each NAT64 prefix length that fits in the
# local-use /48 (octet 8 is always skipped). The operator's length cannot be known here,
# so every candidate must be public.
_RFC6052_OCTETS = [(6, 7, 9, 10), (7, 9, 10, 11), (9, 10, 11, 12), (12, 13, 14, 15)]


def embedded_ipv4(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 address(es) ``ip`` stands for, or () when it carries none."""
    if any(ip in net for net in _LOW_32):
        return (IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip in NAT64_LOCAL:
        packed = ip.packed
        return tuple(IPv4Address(bytes(packed[i] for i in octets)) for octets in _RFC6052_OCTETS)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client): traffic goes through the one to the other
    return ()


def _registry_says(ip: IPv4Address | IPv6Address) -> bool:
    if ip.version == 6 and ip not in GLOBAL_UNICAST_V6:
        return False  # unassigned or special; the forms carrying IPv4 were handled first
    for net, reachable in _ROWS:
        if ip.version == net.version and ip in net:
            return reachable
    return True


def _allowed_one(ip, allow: list) -> bool:
    return any(ip.version == net.version and ip in net for net in allow) or _registry_says(ip)


def is_allowed(address: str, allow: list) -> bool:
    """Whether a webhook may connect to ``address``: it is in one of the operator's
    ``allow`` networks, or public; an IPv6 address carrying IPv4 is judged by each IPv4
    address it carries (unless the IPv6 address itself is allowed)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if any(ip.version == net.version and ip in net for net in allow):
        return True
    embedded = embedded_ipv4(ip) if ip.version == 6 else ()
    if embedded:
        return all(_allowed_one(v4, allow) for v4 in embedded)
    return _registry_says(ip)
