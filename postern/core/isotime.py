"""ISO 8601 times given by callers (query parameters, page tokens), as the database
stores times: naive UTC."""

from __future__ import annotations

import datetime as dt

from postern.core.errors import InvalidInput


def parse_time(value, name: str) -> dt.datetime:
    """``value`` (``Z`` or an offset, or none: UTC) as a naive UTC datetime; an
    ``InvalidInput`` naming ``name`` when it is not a time."""
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time", field=name) from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise InvalidInput(f"{name} is out of range", field=name) from None
    return moment
