"""``[send.acs]``: parsed and checked at start-up, without the SDK.

Every problem is a ``ValueError`` naming the option; no message ever quotes the access
key or the connection string.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from postern.core.names import is_within

SPF_INCLUDE = "include:spf.protection.outlook.com"
#: The two DKIM CNAMEs the Azure portal shows for a custom domain (selector -> target).
DKIM_CNAMES = {
    "selector1-azurecomm-prod-net": "selector1-azurecomm-prod-net._domainkey.azurecomm.net",
    "selector2-azurecomm-prod-net": "selector2-azurecomm-prod-net._domainkey.azurecomm.net",
}
SENDER_MODES = ("inbox", "fixed")


@dataclass(frozen=True)
class AcsOptions:
    endpoint: str  # https://<resource>.communication.azure.com
    access_key: str  # base64, as the portal shows it
    sender_mode: str = "inbox"
    sender: str = ""
    verified_domains: tuple[str, ...] = ()
    poll_interval: float = 5.0
    timeout: float = 600.0
    request_timeout: float = 10.0
    ca_file: str = ""
    engagement_tracking: bool = False
    spf: tuple[str, ...] = (SPF_INCLUDE,)
    dkim: Mapping[str, str] = field(default_factory=lambda: dict(DKIM_CNAMES))
    domain_verification: Mapping[str, str] = field(default_factory=dict)

    def sender_domain_verified(self, domain: str) -> bool:
        return not self.verified_domains or any(is_within(domain, d) for d in self.verified_domains)


KINDS: dict[str, type | tuple[type, ...]] = {
    "connection_string": str,
    "endpoint": str,
    "access_key": str,
    "sender_mode": str,
    "sender": str,
    "verified_domains": list,
    "poll_interval": (int, float),
    "timeout": (int, float),
    "request_timeout": (int, float),
    "ca_file": str,
    "engagement_tracking": bool,
    "spf": list,
    "dkim": dict,
    "domain_verification": dict,
}


def parse(options: Mapping[str, Any]) -> AcsOptions:
    options = dict(options)
    for key, value in options.items():
        kind = KINDS.get(key)
        if kind is None:
            raise ValueError(f"unknown option '{key}'; known: {', '.join(KINDS)}")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"'{key}' has the wrong type")
    endpoint, access_key = _credentials(options)
    mode = options.pop("sender_mode", "inbox")
    if mode not in SENDER_MODES:
        raise ValueError(f"sender_mode must be one of {', '.join(SENDER_MODES)}, got '{mode}'")
    sender = options.pop("sender", "")
    if sender:
        sender = _address("sender", sender)
    if mode == "fixed" and not sender:
        raise ValueError('sender_mode = "fixed" needs sender, an address on a domain verified in ACS')
    for key in ("poll_interval", "timeout", "request_timeout"):
        if key in options and not options[key] > 0:
            raise ValueError(f"'{key}' must be a positive number of seconds")
    if options.get("ca_file"):
        try:
            ssl.create_default_context(cafile=options["ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file '{options['ca_file']}' is not a readable PEM file of CAs: {exc}") from None
    return AcsOptions(
        endpoint=endpoint,
        access_key=access_key,
        sender_mode=mode,
        sender=sender,
        verified_domains=tuple(_domain("verified_domains", d) for d in options.pop("verified_domains", [])),
        poll_interval=float(options.pop("poll_interval", 5.0)),
        timeout=float(options.pop("timeout", 600.0)),
        request_timeout=float(options.pop("request_timeout", 10.0)),
        ca_file=options.pop("ca_file", ""),
        engagement_tracking=options.pop("engagement_tracking", False),
        spf=tuple(_mechanisms(options.pop("spf", [SPF_INCLUDE]))),
        dkim=_names("dkim", options.pop("dkim", DKIM_CNAMES)),
        domain_verification={
            _domain("domain_verification", k): _txt(k, v) for k, v in options.pop("domain_verification", {}).items()
        },
    )


def _credentials(options: dict) -> tuple[str, str]:
    conn = options.pop("connection_string", "")
    endpoint, key = options.pop("endpoint", ""), options.pop("access_key", "")
    if conn and (endpoint or key):
        raise ValueError("give connection_string, or endpoint and access_key, not both")
    if conn:
        parts = {}
        for element in conn.split(";"):
            name, _, value = element.partition("=")
            if name.strip():
                parts[name.strip().lower()] = value.strip()
        endpoint, key = parts.get("endpoint", ""), parts.get("accesskey", "")
        if not endpoint or not key:
            raise ValueError("connection_string must look like endpoint=https://<resource>;accesskey=<key>")
    elif not endpoint or not key:
        raise ValueError('set connection_string (as { env = "NAME" }), or endpoint and access_key')
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    url = urlsplit(endpoint)
    # The SDK turns a connection string's endpoint into https:// whatever it says.
    if url.scheme != "https" or not url.hostname or url.path.strip("/") or url.query:
        raise ValueError("the ACS endpoint must be https://<host>[:port] with no path")
    try:
        if not base64.b64decode(key, validate=True):
            raise binascii.Error
    except (binascii.Error, ValueError):
        raise ValueError("the ACS access key is not base64 (copy it from the resource's Keys page)") from None
    return f"https://{url.netloc}", key


def _address(option: str, value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"'{option}' is not an email address: {exc}") from None


def _domain(option: str, value: Any) -> str:
    if not isinstance(value, str) or "." not in value or " " in value or "@" in value:
        raise ValueError(f"'{option}' holds '{value}', which is not a domain name")
    return value.lower().rstrip(".")


def _mechanisms(values: list) -> list[str]:
    if not all(isinstance(m, str) and m and " " not in m for m in values):
        raise ValueError("'spf' must be a list of SPF mechanisms such as \"include:spf.protection.outlook.com\"")
    return values


def _names(option: str, table: dict) -> dict[str, str]:
    for selector, target in table.items():
        if not (isinstance(target, str) and target and " " not in target and "." in target and " " not in selector):
            raise ValueError(f"'{option}' maps DKIM selectors to CNAME targets; '{selector}' has none usable")
    return {k: v.rstrip(".") for k, v in table.items()}


def _txt(domain: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in '\r\n"'):
        raise ValueError(
            f"domain_verification of '{domain}' must be the TXT value ACS shows (ms-domain-verification=…)"
        )
    return value
