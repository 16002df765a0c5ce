"""From a human's ``pk_enroll_…`` key to a working client in one call."""

from __future__ import annotations

import httpx

from postern.client.client import Postern
from postern.client.models import Enrollment


def enrolled(
    enrollment_token: str,
    agent_handle: str,
    *,
    base_url: str | None = None,
    transport: httpx.BaseTransport | None = None,
    **client_options,
) -> tuple[Postern, Enrollment]:
    """Redeem ``enrollment_token`` for an agent key now; returns ``(client, enrollment)``
    with ``client`` authenticated by that key and renewing it before it expires (the
    same as ``Postern(enrollment_key=..., agent_handle=...)`` followed by ``enroll()``)."""
    client = Postern(
        api_key="",  # not POSTERN_API_KEY: this client is the enrollment's
        enrollment_key=enrollment_token,
        agent_handle=agent_handle,
        base_url=base_url,
        transport=transport,
        **client_options,
    )
    try:
        return client, client.enroll()
    except BaseException:
        client.close()
        raise
