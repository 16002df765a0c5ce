"""Who the client is behind a reverse proxy: ``X-Forwarded-For`` and ``X-Forwarded-Proto``
are believed only from ``server.trusted_proxies`` (docs/deployment.md, "Trusted proxies").

Postern decides this itself, in one place: gunicorn is told to trust no peer's scheme
headers (``postern/server.py``), so ``req.scheme`` is always the socket's own and only
``client_address``/``client_scheme`` read the forwarded headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``server.trusted_proxies`` as networks (validated at config load)."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _address(text: str):
    """An IP address from a forwarded hop (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``,
    ``::1``), or None when it is not one (``unknown``, an obfuscated node name)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_trusted(address, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, networks: tuple[Network, ...]) -> str | None:
    """The client's address: the direct ``peer`` unless it is a trusted proxy; then the
    ``X-Forwarded-For`` hops read right to left (each proxy appends the one it saw),
    skipping trusted proxies, and the first untrusted hop is the client: a hop left of
    it was written by someone we cannot believe. When every hop is trusted, the leftmost;
    a hop that is not an address ends the walk at the last address believed."""
    peer_ip = _address(peer) if peer else None
    if not networks or not forwarded_for or not is_trusted(peer_ip, networks):
        return peer
    believed = str(peer_ip)
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            return believed
        believed = str(address)
        if not is_trusted(address, networks):
            return believed
    return believed


def client_scheme(peer: str | None, scheme: str, forwarded_proto: str | None, networks: tuple[Network, ...]) -> str:
    """``https`` or ``http`` as the client used it: ``X-Forwarded-Proto`` from a trusted
    peer (its last value, the one our proxy wrote), else the connection's own scheme."""
    if not forwarded_proto or not is_trusted(_address(peer) if peer else None, networks):
        return scheme
    proto = forwarded_proto.split(",")[-1].strip().lower()
    return proto if proto in ("http", "https") else scheme
