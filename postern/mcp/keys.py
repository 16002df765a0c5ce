"""Which Postern key an MCP tool call acts with.

- stdio serves one agent: the key comes from ``POSTERN_API_KEY`` or from
  ``redeem_enrollment``, and is kept for the life of the process.
- Streamable HTTP serves many agents: each request carries its own
  ``Authorization: Bearer pk_agent_…``. A client that opened an MCP session
  (``Mcp-Session-Id``, the handshake-era protocol) may instead redeem an enrollment
  key once; the minted agent key is then kept for that session only. The stateless
  2026-07-28 protocol has no session to keep it in, so there the bearer is the key.

An org admin key is refused everywhere: an MCP host is handed an agent's key, never
the master key of the tenant.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

ADMIN_PREFIX = "pk_admin_"
ADMIN_REFUSAL = (
    "refused: this is an org admin key. Hand the MCP host a postern key, never your master key: "
    "an enrollment key (pk_enroll_…) for redeem_enrollment, or an agent key (pk_agent_…)"
)
MAX_SESSIONS = 10_000
SESSION_TTL = 7 * 86400.0


class NoKey(LookupError):
    """No key for this call."""


class AdminKeyRefused(PermissionError):
    def __init__(self):
        super().__init__(ADMIN_REFUSAL)


def is_admin_key(key: str | None) -> bool:
    return bool(key) and key.startswith(ADMIN_PREFIX)


def bearer(headers) -> str | None:
    value = (headers or {}).get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class KeyRing:
    """Keys by caller: the process's key (stdio) and redeemed keys by MCP session."""

    def __init__(self, process_key: str | None):
        if is_admin_key(process_key):
            raise AdminKeyRefused()
        self._process_key = process_key or None
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def key_for(self, headers) -> str:
        """The key a call with these request headers (``None`` on stdio) acts with."""
        if headers is None:
            if self._process_key is None:
                raise NoKey(
                    "no Postern key yet: call redeem_enrollment with the pk_enroll_… key a human gave you, "
                    "or set POSTERN_API_KEY in the MCP host's env block"
                )
            return self._process_key
        session = headers.get("mcp-session-id")
        if session:
            with self._lock:
                found = self._sessions.get(session)
                if found is not None and found[1] > time.monotonic():
                    return found[0]
        key = bearer(headers)
        if key is None:
            raise NoKey(
                "no Postern key: send 'Authorization: Bearer pk_agent_…' with every request, "
                "or call redeem_enrollment in an MCP session"
            )
        if is_admin_key(key):
            raise AdminKeyRefused()
        return key

    def remember(self, headers, key: str) -> None:
        """Keep a freshly minted key for this caller; ``LookupError`` if nowhere to keep it."""
        if headers is None:
            self._process_key = key
            return
        session = headers.get("mcp-session-id")
        if not session:
            raise NoKey(
                "this HTTP connection has no MCP session to keep a key in (the stateless protocol): "
                "redeem the enrollment key with the SDK or `postern` CLI and send the agent key as "
                "'Authorization: Bearer pk_agent_…'"
            )
        with self._lock:
            self._sessions[session] = (key, time.monotonic() + SESSION_TTL)
            self._sessions.move_to_end(session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
