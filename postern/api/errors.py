"""One error envelope for every failure: ``{"error": {type, code, message, request_id}}``.

Code raises a ``PosternError`` (postern/core/errors.py; ``ApiError`` is the request error
of the HTTP layer itself), which ``handle_domain_error`` turns into its status and code;
falcon's own ``HTTPError``s go through ``serialize_error``. A setup error and anything
unexpected become a logged 500 whose body says nothing about the cause.
"""

from __future__ import annotations

import logging

import falcon

from postern.core import metrics
from postern.core.db import FAULT_FULL, FAULT_UNAVAILABLE, database_fault
from postern.core.errors import RequestError, SetupError

log = logging.getLogger("postern.api")

# The envelope's ``type`` by status, as the API reference documents it.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_required_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "unavailable_error",
}

# Stable codes for falcon's own errors, which carry none.
FALCON_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(RequestError):
    """A request the HTTP layer refuses (its body, its path) with any 4xx ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message, code=code)
        self.status = status


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def envelope(status: int, code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"type": error_type(status), "code": code, "message": message, "request_id": request_id}}


def serialize_error(req, resp, exc: falcon.HTTPError) -> None:
    """falcon's error serializer: every HTTPError, ours or falcon's, as the envelope."""
    status = exc.status_code
    code = FALCON_CODES.get(status) or f"http_{status}"
    message = exc.description or exc.title or falcon.code_to_http_status(status)
    if isinstance(exc, falcon.MediaMalformedError):
        code, message = "malformed_json", "request body is not valid JSON"
    elif isinstance(exc, falcon.HTTPRouteNotFound):
        message = f"no route {req.path}"
    elif isinstance(exc, falcon.HTTPMethodNotAllowed):
        message = f"{req.method} is not allowed on {req.path}"
    resp.content_type = falcon.MEDIA_JSON
    resp.media = envelope(status, code, message, getattr(req.context, "request_id", None))


async def handle_unexpected(req, resp, exc, params) -> None:
    """Anything unplanned: log it with the request id, answer a bare 500."""
    request_id = getattr(req.context, "request_id", None)
    log.exception("unhandled error in %s %s (request %s)", req.method, req.path, request_id)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = envelope(500, "internal_error", "internal error; quote the request id when reporting it", request_id)


#: What a caller is told of a setup error; the operator reads the cause in the log.
SETUP_MESSAGE = "the server cannot do this until its operator fixes its setup; quote the request id"


async def handle_domain_error(req, resp, exc, params) -> None:
    """Every ``PosternError``: a request error or a backend's failure with its status
    and code (and ``Retry-After`` when known); a setup error as a logged 500 without
    its details, which name the server's configuration."""
    request_id = getattr(req.context, "request_id", None)
    if isinstance(exc, SetupError):
        log.error("%s %s (request %s): %s: %s", req.method, req.path, request_id, type(exc).__name__, exc.message)
        exc = SetupError(SETUP_MESSAGE, code="setup_error")
    body = envelope(exc.status, exc.code, exc.message, request_id)
    if exc.field:
        body["error"]["field"] = exc.field
    if getattr(exc, "limit", None):  # a 429 names the limit it hit (docs/limits.md)
        body["error"]["limit"] = exc.limit
    # A 429's RateLimit headers, a 402's x402 PAYMENT-REQUIRED offer (docs/billing.md).
    for name, value in (getattr(exc, "headers", None) or {}).items():
        resp.set_header(name, value)
    resp.status = falcon.code_to_http_status(exc.status)
    resp.content_type = falcon.MEDIA_JSON
    if exc.retry_after is not None:
        resp.set_header("Retry-After", str(int(max(1, exc.retry_after))))
    if exc.status == 401:
        resp.set_header("WWW-Authenticate", 'Bearer realm="postern"')
    resp.media = body


#: Seconds a client is told to wait. A lock or a dropped connection usually clears within
#: seconds; a full disk needs someone to free space.
RETRY_AFTER = {FAULT_UNAVAILABLE: 5, FAULT_FULL: 30}
FAULT_MESSAGES = {
    FAULT_UNAVAILABLE: "the database is unavailable (locked or unreachable); nothing was changed, retry later",
    FAULT_FULL: "the server is out of storage; nothing was changed, retry later",
}


async def handle_database_error(req, resp, exc, params) -> None:
    """A fault of the database (locked, unreachable, out of space): 503 with Retry-After.
    The request's transaction was rolled back, so retrying it is safe. Anything else
    from the database (an integrity error: a bug) is an ordinary 500."""
    fault = database_fault(exc)
    if fault is None:
        await handle_unexpected(req, resp, exc, params)
        return
    kind, request_id = fault.kind, getattr(req.context, "request_id", None)
    metrics.DATABASE_ERRORS.labels(kind).inc()
    log.warning("%s %s (request %s): %s: %s", req.method, req.path, request_id, kind, fault.error)
    resp.status = falcon.HTTP_503
    resp.content_type = falcon.MEDIA_JSON
    resp.set_header("Retry-After", str(RETRY_AFTER[kind]))
    resp.media = envelope(503, kind, FAULT_MESSAGES[kind], request_id)
