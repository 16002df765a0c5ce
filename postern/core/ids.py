"""Public object ids: a type prefix and 128 random bits, e.g. ``cus_3kq…``."""

import base64
import secrets


def new_id(prefix: str) -> str:
    """A new id such as ``cus_vb3q7…``: unguessable, URL-safe, sortable by nothing."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    return f"{prefix}_{raw}"
