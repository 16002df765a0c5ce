"""Every error Postern reports, as one tree under ``PosternError``.

    PosternError                      the root: anything a caller or operator is told
    ├── RequestError                  the request cannot be done as asked (the API's 4xx)
    │   ├── InvalidInput (422), AuthenticationFailed (401), PermissionDenied (403),
    │   │   QuotaExceeded, PaymentRequired (402), NotFound (404), Conflict (409)
    │   └── … in their modules: InvalidName, MalformedKey, LinkGone, MailRejected, …
    ├── SetupError                    the operator must fix the setup (the API's 500)
    │   ├── ConfigError               postern.toml / POSTERN_* cannot be used
    │   └── … in their modules: PluginError, RegistryError, UnknownBackendError,
    │       DatabaseConfigError, SchemaError, DkimKeyUnavailable, SecretUnreadable
    └── BackendError                  a backend or dependency failed (the API's 503)
        ├── BackendUnavailable        no installed backend serves the role
        ├── TemporaryFailure          may succeed later (``retry_after``)
        ├── PermanentFailure          will not succeed as asked
        └── Unavailable               a dependency cannot do it now; retry later

Each class carries the HTTP ``status`` and stable ``code`` the API answers with. One place
converts them for the API (``postern/api/errors.py``: ``handle_domain_error``) and one
for the CLI (``postern/cli/context.py``: ``click_error``: one ``Error:`` line, exit 1).
This module imports nothing of Postern, so any module may raise these.
"""

from __future__ import annotations


class PosternError(Exception):
    """The root of every error Postern reports to a caller or an operator."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None, retry_after=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field
        self.retry_after = retry_after
        #: Set once an audit row records this refusal, so it is written only once.
        self.audited = False


# The request branch: the caller can fix it. The API answers each with its 4xx status.


class RequestError(PosternError):
    """The request cannot be done as asked: bad input, no such thing, not allowed."""

    status = 400
    code = "bad_request"


class InvalidInput(RequestError):
    """A request field is missing, of the wrong type or out of range; ``field`` names it."""

    status = 422
    code = "invalid_field"


class AuthenticationFailed(RequestError):
    """No key, or a key that is malformed, unknown, expired or revoked."""

    status = 401
    code = "invalid_key"


class PermissionDenied(RequestError):
    """A valid key that may not do this (scope, key class, redemption limit)."""

    status = 403
    code = "forbidden"


class QuotaExceeded(PermissionDenied):
    code = "quota_exceeded"


class PaymentRequired(RequestError):
    status = 402
    code = "payment_required"


class NotFound(RequestError):
    """Missing, or another tenant's: the two are indistinguishable on purpose."""

    status = 404
    code = "not_found"


class Conflict(RequestError):
    status = 409
    code = "conflict"


class RateLimited(RequestError):
    """Too many attempts from one client; ``retry_after`` says when to try again."""

    status = 429
    code = "rate_limited"


# The setup branch: only the operator can fix it (config, plugins, database, keys).
# The API answers 500 without the details, which go to the log.


class SetupError(PosternError):
    """Postern is not set up so that it can do this: the message says what to fix."""

    status = 500
    code = "setup_error"


class ConfigError(SetupError):
    """The configuration cannot be used; the message names the offending key."""

    code = "config_error"


# The backend branch: a backend or another dependency failed. The API answers 503
# (``Retry-After`` when known); the outbox retries a temporary failure.


class BackendError(PosternError):
    """Base class of every failure a backend reports."""

    status = 503
    code = "unavailable"


class BackendUnavailable(BackendError, LookupError):
    """The role's default backend is not installed yet, and config chose none."""

    code = "no_backend"


class TemporaryFailure(BackendError):
    """The operation may succeed later; the core retries, honouring ``retry_after``."""

    code = "temporary"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str = "temporary"):
        super().__init__(message, code=code, retry_after=retry_after)


class PermanentFailure(BackendError):
    """The operation will not succeed as asked; the core reports it and stops."""

    status = 502
    code = "permanent"

    def __init__(self, message: str, *, code: str = "permanent"):
        super().__init__(message, code=code)


class Unavailable(BackendError):
    """A dependency (a backend, the database) cannot do it right now; retry later."""

    code = "unavailable"
