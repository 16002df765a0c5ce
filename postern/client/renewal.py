"""Keeping a client's agent key alive from an enrollment credential.

Agent keys are short-lived (``auth.agent_key_ttl_seconds``, 24 h by default). A client
given an enrollment key and an agent handle redeems them for its key, and redeems them
again (a renewal: the same handle is the same agent, and the server does not count it
against ``max_redemptions``) when ``renew_before`` of the key's lifetime is left, and
at once when the server answers ``key_expired``. ``key_revoked`` is never renewed: a
human took the key away on purpose.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
from collections.abc import Callable


class Renewal:
    """The agent key a client uses, and renewing it once at a time. ``redeem`` posts the
    enrollment credential and returns ``(enrollment JSON, the server's Date header)``."""

    def __init__(self, enrollment_key: str, agent_handle: str | None, renew_before: float, key: str = ""):
        if not agent_handle:
            raise ValueError("agent_handle is required with enrollment_key (or set POSTERN_AGENT_HANDLE)")
        if not 0 <= renew_before < 1:
            raise ValueError("renew_before is the fraction of the key's lifetime left when it is renewed: 0 to <1")
        self.enrollment_key, self.agent_handle, self.renew_before = enrollment_key, agent_handle, renew_before
        #: The agent key in use: one given to the client, or the last one redeemed.
        self.key = key
        self._renew_at: float | None = None  # monotonic; None: renew only on key_expired
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never a key
        return f"Renewal(agent_handle={self.agent_handle!r}, renew_before={self.renew_before})"

    def due(self) -> bool:
        """No key yet, or the key is in the last ``renew_before`` of its lifetime."""
        return not self.key or (self._renew_at is not None and time.monotonic() >= self._renew_at)

    def current(self, redeem: Callable[[], tuple[dict, str | None]]) -> str:
        """The key to send now, renewed first when it is due."""
        if self.due():
            self.renew(self.key, redeem, force=False)
        return self.key

    def renew(self, failed_key: str, redeem: Callable[[], tuple[dict, str | None]], *, force: bool) -> dict | None:
        """Redeem again and keep the new key; returns the enrollment JSON. None when
        another thread already replaced ``failed_key`` (or, unforced, when not due)."""
        with self._lock:
            if self.key != failed_key or not (force or self.due()):
                return None
            data, server_date = redeem()
            self.key = data["agent_key"]
            self._renew_at = self._schedule(data.get("expires_at"), server_date)
            return data

    def _schedule(self, expires_at: str | None, server_date: str | None) -> float | None:
        """The monotonic time to renew at. The lifetime is measured against the server's
        clock (its Date header) when it sent one, so a skewed local clock does not matter."""
        if not expires_at:
            return None
        expires = dt.datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        now = None
        if server_date:
            try:
                now = email.utils.parsedate_to_datetime(server_date)
            except (TypeError, ValueError):
                now = None
        if now is None or now.tzinfo is None:
            now = dt.datetime.now(dt.UTC)
        lifetime = max(0.0, (expires - now).total_seconds())
        return time.monotonic() + lifetime * (1 - self.renew_before)
