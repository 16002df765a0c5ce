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
    },
}

ERROR_RESPONSE = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
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
            op["responses"] = {**op["responses"], "default": ERROR_RESPONSE}
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
