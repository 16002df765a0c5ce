"""Domain errors with a stable code and the HTTP status the API maps them to.

The API turns them into the error envelope in one place, the CLI into one line.
"""

from __future__ import annotations


class PosternError(Exception):
    """Base of every error the core reports to a caller."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None, retry_after=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field
        self.retry_after = retry_after
        #: Set once an audit row records this refusal, so it is written only once.
        self.audited = False


class InvalidInput(PosternError):
    """A request field is missing, of the wrong type or out of range; ``field`` names it."""

    status = 422
    code = "invalid_field"


class AuthenticationFailed(PosternError):
    """No key, or a key that is malformed, unknown, expired or revoked."""

    status = 401
    code = "invalid_key"


class PermissionDenied(PosternError):
    """A valid key that may not do this (scope, key class, redemption limit)."""

    status = 403
    code = "forbidden"


class QuotaExceeded(PermissionDenied):
    code = "quota_exceeded"


class PaymentRequired(PosternError):
    status = 402
    code = "payment_required"


class NotFound(PosternError):
    """Missing, or another tenant's: the two are indistinguishable on purpose."""

    status = 404
    code = "not_found"


class Conflict(PosternError):
    status = 409
    code = "conflict"


class Unavailable(PosternError):
    """A dependency (a backend, the database) cannot do it right now; retry later."""

    status = 503
    code = "unavailable"
