"""``GET /v1/openapi.json``, assembled from the routes the app really serves.

Each resource class documents its own operations in an ``OPENAPI`` mapping
(method -> operation object); a test fails when a served method has none.
"""

from __future__ import annotations

import postern
from postern.api.schemas import SCHEMAS

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "field": {"type": "string", "description": "the request field at fault, when one is"},
            },
        }
    },
}

HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "database", "services"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
        "database": {"type": "object"},
        "services": {"type": "array", "items": {"type": "object"}},
        "outbound": {
            "type": ["object", "null"],
            "description": "How mail to outside addresses leaves: relay, direct (to each MX), "
            "capture-only (kept, never sent) or unavailable",
            "properties": {
                "mode": {"type": "string", "enum": ["relay", "direct", "capture-only", "unavailable"]},
                "backend": {"type": "string"},
                "detail": {"type": "string"},
            },
        },
        "backends": {
            "type": "array",
            "description": "Each active backend and whether what it depends on answers (probed at most every "
            "10 s); status is degraded while one does not",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string"},
                    "backend": {"type": "string"},
                    "reachable": {"type": "boolean"},
                    "reason": {"type": ["string", "null"]},
                },
            },
        },
    },
}

ERROR_RESPONSE = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

UNAVAILABLE_RESPONSE = {
    "description": (
        "A fault outside the request: the database locked, unreachable or out of space"
        " (`database_unavailable`, `storage_full`), or a dependency down. Nothing was"
        " changed; retry after `Retry-After` seconds. See docs/reliability.md."
    ),
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "seconds"}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

# gunicorn answers these itself, as text/plain, before a request reaches the app: a
# request line over the first limit and a header over the second or more headers than
# the third. Any operation can get them, so every operation documents them; server.py
# hands gunicorn these same limits.
REQUEST_LINE_LIMIT, HEADER_SIZE_LIMIT, HEADER_COUNT_LIMIT = 4094, 8190, 100
HTTP_SERVER_RESPONSES = {
    "414": {
        "description": f"URI Too Long: a request line over {REQUEST_LINE_LIMIT} bytes (answered by the HTTP server)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    "431": {
        "description": (
            f"Request Header Fields Too Large: a header over {HEADER_SIZE_LIMIT} bytes or over"
            f" {HEADER_COUNT_LIMIT} headers (answered by the HTTP server)"
        ),
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


def build_document(routes) -> dict:
    """The OpenAPI 3.1 document for ``routes`` (a list of ``Route``)."""
    paths: dict[str, dict] = {}
    for route in routes:
        operations = getattr(route.resource, "OPENAPI", {})
        item = paths.setdefault(route.path, {})
        for method, operation in operations.items():
            op = dict(operation)
            op.setdefault("responses", {})
            responses = {**op["responses"], **HTTP_SERVER_RESPONSES, "default": ERROR_RESPONSE}
            if not isinstance(route.resource, OpenApiResource):  # everything else reads the database
                responses.setdefault("503", UNAVAILABLE_RESPONSE)
            op["responses"] = responses
            item[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Postern API", "version": postern.__version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, "Health": HEALTH_SCHEMA, **SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class OpenApiResource:
    OPENAPI = {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}},
        }
    }

    def __init__(self, routes):
        self.routes = routes
        self._document = None

    async def on_get(self, req, resp) -> None:
        if self._document is None:
            self._document = build_document(self.routes)
        resp.media = self._document
