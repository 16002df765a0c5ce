"""Cursor pagination: ``limit`` + ``page_token`` in, ``next_page_token`` out.

Tokens are opaque (URL-safe base64 of the last row's sort key), so clients cannot
depend on their shape and new rows never shift a page.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from postern.core.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_page_token: str | None


def parse_limit(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return limit


def encode_token(key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str | None, arity: int) -> list | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (ValueError, TypeError):
        raise InvalidInput("page_token is not one this API issued", field="page_token") from None
    if not isinstance(key, list) or len(key) != arity or not all(isinstance(k, (str, int)) for k in key):
        raise InvalidInput("page_token is not one this API issued", field="page_token")
    return key


def paginate(query, created_field, id_field, limit: int, page_token: str | None) -> Page:
    """Oldest first, keyed on (created_at, id) so equal timestamps still page exactly."""
    key = decode_token(page_token, 2)
    if key is not None:
        try:
            after = dt.datetime.fromisoformat(key[0])
        except (TypeError, ValueError):
            raise InvalidInput("page_token is not one this API issued", field="page_token") from None
        query = query.where((created_field > after) | ((created_field == after) & (id_field > key[1])))
    rows = list(query.order_by(created_field, id_field).limit(limit + 1))
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    token = encode_token([getattr(last, created_field.name).isoformat(), getattr(last, id_field.name)])
    return Page(rows[:limit], token)


def paginate_newest_first(query, id_field, limit: int, page_token: str | None) -> Page:
    """Newest first by a monotonic integer id (the audit log)."""
    before = newest_first_bound(page_token)
    if before is not None:
        query = query.where(id_field < before)
    rows = list(query.order_by(id_field.desc()).limit(limit + 1))
    return newest_first_page(rows, limit, id_field.name)


def newest_first_bound(page_token: str | None) -> int | None:
    """The id a newest-first page starts below, or None for the first page."""
    key = decode_token(page_token, 1)
    if key is None:
        return None
    if not isinstance(key[0], int) or not 0 < key[0] < 2**63:
        raise InvalidInput("page_token is not one this API issued", field="page_token")
    return key[0]


def newest_first_page(rows: list, limit: int, id_name: str) -> Page:
    """A page of ``limit`` from ``rows`` fetched with ``limit + 1`` (the extra row says more follow)."""
    if len(rows) <= limit:
        return Page(rows, None)
    return Page(rows[:limit], encode_token([getattr(rows[limit - 1], id_name)]))
