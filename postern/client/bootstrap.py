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
    """Redeem ``enrollment_token`` for a new agent key; returns ``(client, enrollment)``
    with ``client`` authenticated by that key. The key is shown once by the server: keep
    the client (or ``client.api_key``) if the agent must reuse it."""
    anonymous = Postern(api_key="", base_url=base_url, transport=transport, **client_options)
    try:
        data = anonymous.request(
            "POST",
            "/v1/enroll",
            json={"enrollment_token": enrollment_token, "agent_handle": agent_handle},
            authenticated=False,
        )
    finally:
        anonymous.close()
    client = Postern(api_key=data["agent_key"], base_url=base_url, transport=transport, **client_options)
    return client, Enrollment.from_json(data)
