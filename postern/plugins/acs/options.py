"""``[send.acs]``: parsed and checked at start-up, without the SDK.

Every problem is an ``OptionError`` (postern.core.options) naming ``[send.acs]`` and
the option; no message ever quotes the access key or the connection string.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from postern.core.names import is_within
from postern.core.options import one_of, option

SPF_INCLUDE = "include:spf.protection.outlook.com"
#: The two DKIM CNAMEs the Azure portal shows for a custom domain (selector -> target).
DKIM_CNAMES = {
    "selector1-azurecomm-prod-net": "selector1-azurecomm-prod-net._domainkey.azurecomm.net",
    "selector2-azurecomm-prod-net": "selector2-azurecomm-prod-net._domainkey.azurecomm.net",
}
SENDER_MODES = ("inbox", "fixed")


# The checks below are the ``check`` of one option each: their message follows its name.


def _address(value: str) -> str:
    if not value:
        return value
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"is not an email address: {exc}") from None


def _domain(value: str) -> str:
    if "." not in value or " " in value or "@" in value:
        raise ValueError(f"holds '{value}', which is not a domain name")
    return value.lower().rstrip(".")


def _mechanisms(values: tuple[str, ...]) -> tuple[str, ...]:
    if not all(m and " " not in m for m in values):
        raise ValueError('must be a list of SPF mechanisms such as "include:spf.protection.outlook.com"')
    return values


def _cnames(table: Mapping[str, str]) -> dict[str, str]:
    for selector, target in table.items():
        if not (target and " " not in target and "." in target and " " not in selector):
            raise ValueError(f"maps DKIM selectors to CNAME targets; '{selector}' has none usable")
    return {k: v.rstrip(".") for k, v in table.items()}


def _verification(table: Mapping[str, str]) -> dict[str, str]:
    for domain, value in table.items():
        if not value or any(c in value for c in '\r\n"'):
            raise ValueError(f"of '{domain}' must be the TXT value ACS shows (ms-domain-verification=…)")
    return {_domain(k): v for k, v in table.items()}


def _seconds(value: float) -> float:
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _ca_file(value: str) -> str:
    if value:
        try:
            ssl.create_default_context(cafile=value)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"'{value}' is not a readable PEM file of CAs: {exc}") from None
    return value


@dataclass(frozen=True)
class AcsOptions:
    """``[send.acs]``. Give ``connection_string``, or ``endpoint`` and ``access_key``:
    either way ``endpoint`` and ``access_key`` hold them once parsed."""

    connection_string: str = option("", secret=True, help="endpoint=https://<resource>;accesskey=<key>")
    endpoint: str = option("", help="https://<resource>.communication.azure.com")
    access_key: str = option("", secret=True, help="base64, as the portal shows it")
    sender_mode: str = option("inbox", check=one_of(*SENDER_MODES))
    sender: str = option("", check=_address)
    verified_domains: tuple[str, ...] = option((), check=lambda domains: tuple(_domain(d) for d in domains))
    poll_interval: float = option(5.0, check=_seconds)
    timeout: float = option(600.0, check=_seconds)
    request_timeout: float = option(10.0, check=_seconds)
    ca_file: str = option("", check=_ca_file)
    engagement_tracking: bool = option(False)
    spf: tuple[str, ...] = option((SPF_INCLUDE,), check=_mechanisms)
    dkim: Mapping[str, str] = option(DKIM_CNAMES, check=_cnames)
    domain_verification: Mapping[str, str] = option({}, check=_verification)

    def __post_init__(self):
        endpoint, key = _credentials(self.connection_string, self.endpoint, self.access_key)
        object.__setattr__(self, "endpoint", endpoint)
        object.__setattr__(self, "access_key", key)
        if self.sender_mode == "fixed" and not self.sender:
            raise ValueError('sender_mode = "fixed" needs sender, an address on a domain verified in ACS')

    def sender_domain_verified(self, domain: str) -> bool:
        return not self.verified_domains or any(is_within(domain, d) for d in self.verified_domains)


def _credentials(conn: str, endpoint: str, key: str) -> tuple[str, str]:
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
