"""Which URLs a webhook may call, checked when it is saved and again at connect time.

Only http(s). Destinations that are not public (by IANA's special-purpose registries:
loopback, private, link-local, shared, reserved, documentation, multicast, deprecated;
IPv6 forms carrying an IPv4 address are judged by that address, see ``public_ip``) are
refused unless their address falls in ``webhooks.allow_destinations``. A host name is resolved once per
attempt, every address it resolves to is checked, and the connection goes to a
checked address (never a second lookup), so DNS rebinding cannot slip past the check.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from postern.core.errors import InvalidInput, RequestError
from postern.core.webhooks import public_ip

MAX_URL = 2000


class DestinationRefused(RequestError):
    """The URL's host is, or resolves to, an address that may not be called."""

    code = "destination_refused"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query string

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str) -> Target:
    """Parse a webhook URL or raise ``InvalidInput`` (field ``url``)."""

    def bad(why: str):
        return InvalidInput(f"url {why}", field="url")

    if not isinstance(url, str) or not url:
        raise bad("must be a non-empty string")
    if len(url) > MAX_URL:
        raise bad(f"is longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise bad("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise bad("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise bad("must not carry credentials (user:password@)")
    if parts.fragment:
        raise bad("must not have a #fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise bad("has no host")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        raise bad("host must be ASCII (use the punycode xn-- form)") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def networks(allow: list[str]) -> list[ipaddress._BaseNetwork]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in allow]


def address_allowed(address: str, allow: list) -> bool:
    """The one policy both checks use: at save time and at connect time."""
    return public_ip.is_allowed(address, allow)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def check_url(url: str, allow: list[str]) -> Target:
    """Validate ``url`` when a webhook is saved: shape, then a literal address or a
    ``localhost`` name against the policy. Other names are checked at each attempt,
    when they are resolved (their records may change at any time anyway)."""
    target = parse(url)
    nets = networks(allow)
    literal = _literal(target.host)
    probe = literal or ("127.0.0.1" if target.host == "localhost" or target.host.endswith(".localhost") else None)
    if probe is not None and not address_allowed(probe, nets):
        raise InvalidInput(
            "url points at a private, loopback or link-local address; "
            "the operator can allow it with webhooks.allow_destinations",
            field="url",
            code="destination_refused",
        )
    return target


def resolve(target: Target, allow: list[str]) -> list[str]:
    """Resolve once and check every address; the caller connects only to these."""
    nets = networks(allow)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"cannot resolve {target.host}: {exc.strerror}") from None
    except UnicodeError:
        raise DestinationRefused(f"{target.host[:100]} is not a valid host name") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    refused = [a for a in addresses if not address_allowed(a, nets)]
    if refused or not addresses:
        raise DestinationRefused(
            f"{target.host} resolves to a non-public address ({', '.join(refused[:3]) or 'none'}); "
            "allow it with webhooks.allow_destinations"
        )
    return addresses
