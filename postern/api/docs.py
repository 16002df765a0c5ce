"""Small builders for the OpenAPI operations each resource declares."""

from __future__ import annotations


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def operation(summary: str, responses: dict, *, body: dict | None = None, params=(), scope=None, auth="agent") -> dict:
    """One operation; ``responses`` maps status to (description, schema or None)."""
    op = {
        "summary": summary,
        "responses": {
            str(status): {
                "description": desc,
                **({"content": {"application/json": {"schema": schema}}} if schema else {}),
            }
            for status, (desc, schema) in responses.items()
        },
    }
    if body is not None:
        op["requestBody"] = json_body(body)
    if params:
        op["parameters"] = list(params)
    if auth is None:
        op["security"] = []
    if scope:
        op["x-postern-scope"] = scope
    op["x-postern-auth"] = auth
    return op


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def query_param(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"}}


PAGING = (query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200}), query_param("page_token"))


def page_of(item: dict) -> dict:
    return {
        "type": "object",
        "required": ["data", "next_page_token"],
        "properties": {"data": {"type": "array", "items": item}, "next_page_token": {"type": ["string", "null"]}},
    }
