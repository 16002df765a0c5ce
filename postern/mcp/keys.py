"""Which Postern key an MCP tool call acts with.

- stdio serves one agent: the key comes from ``POSTERN_ENROLLMENT_KEY`` with
  ``POSTERN_AGENT_HANDLE`` (recommended: redeemed on the first call and renewed before
  it expires, with no tool call), ``POSTERN_API_KEY``, or ``redeem_enrollment``, and is
  kept for the life of the process.
- Streamable HTTP serves many agents: each request carries its own
  ``Authorization: Bearer pk_agent_…``. A client that opened an MCP session
  (``Mcp-Session-Id``, the handshake-era protocol) may instead redeem an enrollment
  key once; the minted agent key is then kept, and renewed, for that session only. The
  stateless 2026-07-28 protocol has no session to keep it in, so there the bearer is the key.

A redeemed credential is held as a renewing SDK client (postern.client.renewal): it
renews its agent key before expiry and on ``key_expired``, never on ``key_revoked``.

An org admin key is refused everywhere: an MCP host is handed an agent's key, never
the master key of the tenant.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

from postern.client import Postern

ADMIN_PREFIX = "pk_admin_"
ADMIN_REFUSAL = (
    "refused: this is an org admin key. Hand the MCP host a postern key, never your master key: "
    "an enrollment key (pk_enroll_…) for redeem_enrollment, or an agent key (pk_agent_…)"
)
MAX_SESSIONS = 10_000
SESSION_TTL = 7 * 86400.0


class NoKey(LookupError):
    """No key for this call."""


class IncompleteCredential(ValueError):
    """An enrollment key without the handle to redeem it under (stops ``postern mcp``)."""


class AdminKeyRefused(PermissionError):
    def __init__(self):
        super().__init__(ADMIN_REFUSAL)


def is_admin_key(key: str | None) -> bool:
    return bool(key) and key.startswith(ADMIN_PREFIX)


def bearer(headers) -> str | None:
    value = (headers or {}).get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def enrollment_client(api_key: str | None, base_url: str | None, transport=None) -> Postern | None:
    """The stdio process's renewing client when ``POSTERN_ENROLLMENT_KEY`` is set (with
    ``POSTERN_AGENT_HANDLE``), else None. ``api_key``, if any, is used until it expires.
    Nothing is redeemed here: the first tool call does it, so the server starts even
    while Postern is down."""
    token = os.environ.get("POSTERN_ENROLLMENT_KEY")
    if not token:
        return None
    if is_admin_key(token):
        raise AdminKeyRefused()
    handle = os.environ.get("POSTERN_AGENT_HANDLE")
    if not handle:
        raise IncompleteCredential(
            "POSTERN_ENROLLMENT_KEY needs POSTERN_AGENT_HANDLE: the agent's name, e.g. support-bot"
        )
    return Postern(
        api_key=api_key,
        enrollment_key=token,
        agent_handle=handle,
        base_url=base_url,
        transport=transport,
        max_retries=2,
    )


class KeyRing:
    """Credentials by caller: the process's (stdio) and redeemed ones by MCP session."""

    def __init__(self, process_key: str | None, process_client: Postern | None = None):
        if is_admin_key(process_key):
            raise AdminKeyRefused()
        self._process_key = process_key or None
        self._process_client = process_client
        self._sessions: OrderedDict[str, tuple[Postern, float]] = OrderedDict()
        self._lock = threading.Lock()

    def client_for(self, headers, clients) -> Postern:
        """The client a call with these request headers (``None`` on stdio) acts with:
        a redeemed, renewing one, or ``clients.get(key)`` for a plain agent key."""
        if headers is None and self._process_client is not None:
            return self._process_client
        session = headers.get("mcp-session-id") if headers is not None else None
        if session:
            with self._lock:
                found = self._sessions.get(session)
                if found is not None and found[1] > time.monotonic():
                    return found[0]
        return clients.get(self.key_for(headers))

    def key_for(self, headers) -> str:
        """The plain agent key a call with these request headers (``None`` on stdio) acts with."""
        if headers is None:
            if self._process_key is None:
                raise NoKey(
                    "no Postern key yet: call redeem_enrollment with the pk_enroll_… key a human gave you, "
                    "or set POSTERN_ENROLLMENT_KEY and POSTERN_AGENT_HANDLE in the MCP host's env block"
                )
            return self._process_key
        key = bearer(headers)
        if key is None:
            raise NoKey(
                "no Postern key: send 'Authorization: Bearer pk_agent_…' with every request, "
                "or call redeem_enrollment in an MCP session"
            )
        if is_admin_key(key):
            raise AdminKeyRefused()
        return key

    def remember(self, headers, client: Postern) -> None:
        """Keep a freshly redeemed, renewing client for this caller; ``LookupError`` if
        nowhere to keep it. A client it replaces is left to the garbage collector, not
        closed: a wait may still be running on it."""
        if headers is None:
            self._process_client = client
            return
        session = headers.get("mcp-session-id")
        if not session:
            raise NoKey(
                "this HTTP connection has no MCP session to keep a key in (the stateless protocol): "
                "redeem the enrollment key with the SDK or `postern` CLI and send the agent key as "
                "'Authorization: Bearer pk_agent_…'"
            )
        with self._lock:
            self._sessions[session] = (client, time.monotonic() + SESSION_TTL)
            self._sessions.move_to_end(session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)

    def close(self) -> None:
        """Close the redeemed clients (at shutdown)."""
        with self._lock:
            held = [c for c, _ in self._sessions.values()]
            self._sessions.clear()
        for client in [self._process_client, *held]:
            if client is not None:
                client.close()
