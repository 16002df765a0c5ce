"""Whether an outbound message left this server, said so an agent cannot misread it.

``captured`` used to look like success (``error: null``): with no outbound route (the
default ``smtp_local`` without a smarthost) mail to outside addresses is kept in the
store and sent nowhere. Every message JSON now carries ``left_server`` and a
``status_reason``, and the server reports its outbound mode (``/healthz``,
``postern plugins``), all derived here from the row and the send backend.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPTURED_REASON = "no outbound route configured: the mail was kept, not sent"
CAPTURE_ONLY = (
    "mail to outside addresses is kept in Postern's store and sent nowhere (status captured); "
    "configure [send.smtp_local] smarthost or another send backend to send it"
)


@dataclass(frozen=True)
class Outcome:
    """``left_server``: the mail was handed to a transport beyond this Postern.
    ``reason``: why the status is what it is, in one sentence (None for inbound mail)."""

    left_server: bool
    reason: str | None


def outcome(message) -> Outcome:
    """The outcome of a stored message, from its ``status``, ``backend`` and ``error``."""
    if message.direction != "outbound":
        return Outcome(False, None)
    status, backend, error = message.status, message.backend, message.error
    if status == "captured":
        return Outcome(False, CAPTURED_REASON)
    if status == "sent" and backend == "local":
        return Outcome(False, "delivered to inboxes on this server; nothing had to leave it")
    if status == "sent":
        return Outcome(True, f"handed over for delivery by the {backend} send backend")
    if status == "sending":
        return Outcome(True, f"accepted by the {backend} send backend, which is still delivering it")
    if status == "queued":
        last = f"; the last attempt failed: {error}" if error else ""
        return Outcome(False, f"not sent yet: Postern will try again{last}")
    if status == "failed":
        return Outcome(False, f"not sent: {error}" if error else "not sent")
    if status == "cancelled":
        return Outcome(False, "not sent: the operator cancelled it in the outbound queue")
    if status == "pending_approval":
        return Outcome(False, "held for human approval: nothing is sent until an operator or org admin approves it")
    if status == "rejected":
        note = getattr(message, "review_note", None)
        return Outcome(False, "not sent: rejected by a reviewer" + (f": {note}" if note else ""))
    if status == "expired":
        return Outcome(False, "not sent: nobody approved it before its approval time ran out")
    return Outcome(False, None)


@dataclass(frozen=True)
class OutboundMode:
    """How this server sends mail to outside addresses. ``mode`` is ``relay`` (it leaves
    through ``route``), ``direct`` (this server delivers to each domain's MX itself),
    ``capture-only`` (kept, never sent) or ``unavailable`` (the send
    backend cannot be built; ``detail`` says why)."""

    mode: str
    backend: str
    route: str | None
    detail: str

    def as_json(self, *, with_route: bool = True) -> dict:
        body = {"mode": self.mode, "backend": self.backend, "detail": self.detail}
        if with_route:
            body["route"] = self.route
        return body


def outbound_mode(postern) -> OutboundMode:
    name = postern.config.role("send").backend
    try:
        sender = postern.backend("send")
    except (LookupError, ValueError) as exc:  # not installed, unknown name, bad options
        return OutboundMode("unavailable", name, None, str(exc))
    route = sender.outbound_route()
    if route is None:
        return OutboundMode("capture-only", name, None, CAPTURE_ONLY)
    mode = "direct" if getattr(sender, "delivers_directly", False) else "relay"
    return OutboundMode(mode, name, route, f"mail to outside addresses leaves through {route}")
