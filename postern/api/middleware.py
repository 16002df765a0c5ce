"""Per-request context: a request id on every response."""

from __future__ import annotations

import random
import urllib.parse

from postern.api.errors import ApiError
from postern.api.forwarded import client_address, client_scheme, trusted_networks
from postern.core.errors import InvalidInput

REQUEST_ID_HEADER = "X-Request-Id"


def new_request_id() -> str:
    """``req_`` and 96 random bits: unique, not secret (it is sent back in every
    response). From the process's own generator, which ``random`` reseeds from the OS
    in each forked worker, and not ``secrets``: ``os.urandom`` gives up the GIL for its
    system call, and on a worker whose database threads are running Python the event
    loop then waited for the GIL to come back, ~300 us a call in a measured case
    (docs/design.md, "Performance round 2"). ``random`` is predictable from its output:
    never use it for anything secret."""
    return f"req_{random.getrandbits(96):024x}"


class RequestContext:
    """Gives each request an id (``req_…``) that errors, logs and audit rows quote, and
    the client's address and scheme as seen through ``trusted_proxies``
    (``req.context.client_addr``, ``req.context.scheme``: postern/api/forwarded.py)."""

    def __init__(self, trusted_proxies=()):
        self.trusted = trusted_networks(trusted_proxies)

    async def process_request(self, req, resp) -> None:
        req.context.request_id = new_request_id()
        peer = req.remote_addr
        req.context.client_addr = client_address(peer, req.get_header("X-Forwarded-For"), self.trusted)
        req.context.scheme = client_scheme(peer, req.scheme, req.get_header("X-Forwarded-Proto"), self.trusted)
        # NUL can reach no id or filter legitimately, and PostgreSQL refuses it in text.
        if "\x00" in req.path or "%00" in req.query_string or "\x00" in req.query_string:
            raise ApiError(400, "invalid_request", "NUL characters are not allowed in the path or query")
        if "%" in req.query_string and not valid_utf8(req.query_string):
            raise ApiError(400, "invalid_request", "the query string is not valid UTF-8 once percent-decoded")

    async def process_resource(self, req, resp, resource, params) -> None:
        req.context.path_params = dict(params)  # audit rows name the object a refusal was about
        req.context.rate_classes = getattr(resource, "RATE_CLASSES", None)  # docs/limits.md
        if resource is not None and req.query_string:
            check_query(req.query_string, documented_query(resource, req.method))

    async def process_response(self, req, resp, resource, req_succeeded) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header(REQUEST_ID_HEADER, request_id)
        verdict = getattr(req.context, "rate_verdict", None)
        if verdict is not None and not resp.get_header("RateLimit"):
            for name, value in verdict.headers().items():
                resp.set_header(name, value)


class Lifespan:
    """Releases the database thread pool and the doorbell when the worker shuts down."""

    def __init__(self, runner, waiters):
        self.runner = runner
        self.waiters = waiters

    async def process_shutdown(self, scope, event) -> None:
        self.waiters.close()
        self.runner.shutdown()


def valid_utf8(query_string: str) -> bool:
    """Whether the percent-decoded query is UTF-8. falcon would replace what is not (a
    surrogate's bytes ``%ED%A0%80``, a stray ``%FF``) with U+FFFD and carry on, so a
    filter or token would silently become something the caller never sent."""
    try:
        urllib.parse.unquote_to_bytes(query_string.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def documented_query(resource, method: str) -> set[str] | None:
    """The query parameters the OpenAPI document lists for this operation (None when the
    method is not served: falcon answers 405 for it)."""
    operation = getattr(resource, "OPENAPI", {}).get(method.lower())
    if operation is None:
        return None
    return {p["name"] for p in operation.get("parameters", ()) if p.get("in") == "query"}


def check_query(query_string: str, allowed: set[str] | None) -> None:
    """Refuse what falcon would silently drop, as a bad body field is refused: an unknown
    parameter (``?limt=5`` must not quietly return 50), an empty value (``?limit=``
    is not "no limit") and a parameter given twice (which one would win?)."""
    if allowed is None:
        return
    seen = set()
    for name, value in urllib.parse.parse_qsl(query_string, keep_blank_values=True):
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidInput(f"unknown query parameter '{name[:60]}' (known: {known})", field=name[:60])
        if value == "":
            raise InvalidInput(f"query parameter '{name}' is empty; leave it out instead", field=name)
        if name in seen:
            raise InvalidInput(f"query parameter '{name}' is given more than once", field=name)
        seen.add(name)
