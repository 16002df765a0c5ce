"""DNS-safe labels, domains and mailbox local parts, validated one way everywhere."""

from __future__ import annotations

import re

from postern.core.errors import InvalidInput

LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LOCAL_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
DOMAIN_CHARS = re.compile(r"[a-z0-9.-]+")
HANDLE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


class InvalidName(InvalidInput, ValueError):
    """A label, domain, local part or handle that Postern will not accept."""


def normalise_label(value: str) -> str:
    label = value.strip().lower()
    if not LABEL.fullmatch(label):
        raise InvalidName(f"'{value}' is not a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")
    return label


def normalise_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not domain or len(domain) > 253 or not DOMAIN_CHARS.fullmatch(domain):
        raise InvalidName(f"'{value}' is not a domain name")
    for label in domain.split("."):
        try:
            normalise_label(label)
        except InvalidName:
            raise InvalidName(f"'{value}' is not a domain name (bad label '{label}')") from None
    return domain


def normalise_local_part(value: str) -> str:
    local = value.strip().lower()
    if not LOCAL_PART.fullmatch(local) or ".." in local:
        raise InvalidName(
            f"'{value}' is not a valid username: 1-64 of a-z, 0-9, '.', '_' and '-', "
            "starting and ending with a letter or digit, no '..'"
        )
    return local


def normalise_handle(value: str) -> str:
    handle = value.strip().lower()
    if not HANDLE.fullmatch(handle) or ".." in handle:
        raise InvalidName(
            f"'{value}' is not a valid agent handle: 1-64 of a-z, 0-9, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )
    return handle


def is_within(domain: str, parent: str) -> bool:
    """True when ``domain`` is ``parent`` or a subdomain of it."""
    return domain == parent or domain.endswith("." + parent)
