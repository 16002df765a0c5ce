"""Postern for tests: the real server in your process, reached by the normal client.

    from postern.testing import mock_client

    client = mock_client()                       # a postern.client.Postern, offline
    inbox = client.inboxes.create("support")
    client.mock.deliver(inbox.address, subject="Your code", text="123456")

This package belongs to the server distribution (``pip install postern``): it imports
the core and the API. The client (``postern.client``, also shipped alone as
``postern-client``) never imports it; mock mode is reached only from here.
"""

from __future__ import annotations

import httpx

from postern.client import Enrollment, Postern, bootstrap
from postern.testing.inprocess import InProcessTransport
from postern.testing.mockserver import (
    MOCK_AGENT_KEY,
    MOCK_BASE_URL,
    MOCK_ENROLLMENT_TOKEN,
    MOCK_READ_ONLY_KEY,
    MockWorld,
    reset,
    shutdown,
    world,
)


def mock_client(api_key: str | None = None, **client_options) -> Postern:
    """A ``Postern`` client wired to this process's mock world (built on first use).

    ``api_key`` defaults to ``MOCK_AGENT_KEY`` (never to ``POSTERN_API_KEY``: a real key
    means nothing to the mock world). ``client.mock`` is the world, for ``deliver``;
    other options (``timeout``, ``max_retries``) are passed to ``Postern``."""
    mock = world()
    client = Postern(
        api_key=MOCK_AGENT_KEY if api_key is None else api_key,
        base_url=mock.base_url,
        transport=_transport(mock, client_options),
        **client_options,
    )
    client.mock = mock
    return client


def mock_enrolled(
    enrollment_token: str = MOCK_ENROLLMENT_TOKEN, agent_handle: str = "mock-bot", **client_options
) -> tuple[Postern, Enrollment]:
    """``bootstrap.enrolled`` on the mock world: ``(client, enrollment)``, the client
    authenticated by the newly minted agent key, with ``client.mock`` set."""
    mock = world()
    transport = _transport(mock, client_options)
    client, enrollment = bootstrap.enrolled(
        enrollment_token, agent_handle, base_url=mock.base_url, transport=transport, **client_options
    )
    client.mock = mock
    return client, enrollment


def _transport(mock: MockWorld, options: dict) -> httpx.BaseTransport:
    if "base_url" in options or "transport" in options:
        raise TypeError("a mock client always talks to the mock world: pass no base_url or transport")
    return mock.transport


__all__ = [
    "MOCK_AGENT_KEY",
    "MOCK_BASE_URL",
    "MOCK_ENROLLMENT_TOKEN",
    "MOCK_READ_ONLY_KEY",
    "InProcessTransport",
    "MockWorld",
    "mock_client",
    "mock_enrolled",
    "reset",
    "shutdown",
    "world",
]
