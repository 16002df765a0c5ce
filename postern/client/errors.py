"""Typed exceptions, mapped from the API's error envelope
``{"error": {"type", "code", "message", "request_id"}}``."""

from __future__ import annotations


class PosternError(Exception):
    """Anything the SDK raises. ``status`` is the HTTP status (None when no answer came)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,  # noqa: A002 (the envelope's field name)
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.code, self.type = message, status, code, type
        self.request_id, self.retry_after = request_id, retry_after

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        head = f"{self.status} {self.code}: " if self.status else ""
        return f"{head}{self.message}{where}"


class ConnectionFailed(PosternError):
    """The server could not be reached, or the connection broke before an answer."""


class InvalidRequest(PosternError):
    """400/413/415/422: the request itself is wrong; ``code`` says how."""


class AuthenticationFailed(PosternError):
    """401: missing, unknown, expired or revoked key."""


class PaymentRequired(PosternError):
    """402: the tenant's plan or quota does not allow this (``code`` ``plan_limit_reached``),
    or the action must be paid for: ``payment_required`` holds the server's x402 offer (the
    ``PAYMENT-REQUIRED`` header), which a client made with ``x402_payer`` pays by itself."""

    payment_required: str | None = None


class PermissionDenied(PosternError):
    """403: the key lacks the scope, or a limit of its enrollment was reached."""


class NotFound(PosternError):
    """404: no such object, or it belongs to another tenant (never told apart)."""


class Gone(PosternError):
    """410: a download link that expired or was already used."""


class Conflict(PosternError):
    """409: e.g. an Idempotency-Key reused for a different request."""


class RateLimited(PosternError):
    """429, after the SDK's own retries; ``retry_after`` is the server's hint in seconds."""


class Unavailable(PosternError):
    """503 (after retries) or another 5xx: try again later."""


BY_STATUS: dict[int, type[PosternError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    405: InvalidRequest,
    409: Conflict,
    410: Gone,
    411: InvalidRequest,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def from_response(status: int, body, retry_after: float | None) -> PosternError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status} without an error envelope"}
    cls = BY_STATUS.get(status) or (Unavailable if status >= 500 else PosternError)
    return cls(
        str(error.get("message") or ""),
        status=status,
        code=error.get("code"),
        type=error.get("type"),
        request_id=error.get("request_id"),
        retry_after=retry_after,
    )
