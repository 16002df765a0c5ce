"""Public object ids: a type prefix and 128 random bits, e.g. ``cus_3kq…``."""

import base64
import re
import secrets

ID_SHAPE = re.compile(r"[a-z]{2,3}_[a-z2-7]{26}")


def new_id(prefix: str) -> str:
    """A new id such as ``cus_vb3q7…``: unguessable, URL-safe, sortable by nothing."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    return f"{prefix}_{raw}"


def well_formed(value: str, prefix: str) -> bool:
    """Whether ``value`` has the shape of an id issued with ``prefix``; anything else
    is answered as missing without reaching the database."""
    return isinstance(value, str) and value.startswith(prefix + "_") and ID_SHAPE.fullmatch(value) is not None
