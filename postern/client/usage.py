"""``client.usage``: what this key's enrollment used over a period (docs/usage.md)."""

from __future__ import annotations

import datetime as dt

from postern.client.models import Usage


def _when(value: str | dt.datetime | None) -> str | None:
    """A ``datetime`` as ISO 8601 (a naive one is taken as UTC); a string as given."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return value


class UsageReports:
    def __init__(self, client):
        self._c = client  # the ``Postern`` this belongs to (not imported: it imports this module)

    def get(self, *, since: str | dt.datetime | None = None, until: str | dt.datetime | None = None) -> Usage:
        """Usage over [since, until); each defaults to this calendar month's start or
        end (UTC). ``bytes_stored`` is what the enrollment's mail takes now."""
        params = {"since": _when(since), "until": _when(until)}
        return Usage.from_json(self._c.request("GET", "/v1/usage", params=params))
