"""Per-request context: a request id on every response."""

from __future__ import annotations

import secrets

from postern.api.errors import ApiError

REQUEST_ID_HEADER = "X-Request-Id"


class RequestContext:
    """Gives each request an id (``req_…``) that errors, logs and audit rows quote."""

    async def process_request(self, req, resp) -> None:
        req.context.request_id = "req_" + secrets.token_hex(12)
        # NUL can reach no id or filter legitimately, and PostgreSQL refuses it in text.
        if "\x00" in req.path or "%00" in req.query_string or "\x00" in req.query_string:
            raise ApiError(400, "invalid_request", "NUL characters are not allowed in the path or query")

    async def process_resource(self, req, resp, resource, params) -> None:
        req.context.path_params = dict(params)  # audit rows name the object a refusal was about

    async def process_response(self, req, resp, resource, req_succeeded) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header(REQUEST_ID_HEADER, request_id)


class Lifespan:
    """Releases the database thread pool and the doorbell when the worker shuts down."""

    def __init__(self, runner, waiters):
        self.runner = runner
        self.waiters = waiters

    async def process_shutdown(self, scope, event) -> None:
        self.waiters.close()
        self.runner.shutdown()
