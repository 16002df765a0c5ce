"""Reading JSON request bodies with clean 4xx errors for every way they go wrong."""

from __future__ import annotations

import json

import falcon

from postern.api.errors import ApiError
from postern.core.errors import InvalidInput

DEFAULT_MAX_BODY = 1024 * 1024


async def read_json(req, *, max_bytes: int = DEFAULT_MAX_BODY) -> dict:
    """The body as a JSON object: 415 for another content type, 413 when too big,
    400 ``malformed_json`` when it does not parse, 422 when it is not an object."""
    if req.content_type is None or falcon.MEDIA_JSON not in req.content_type.lower():
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    if req.content_length is not None and req.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"request body exceeds {max_bytes} bytes")
    raw = await req.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "payload_too_large", f"request body exceeds {max_bytes} bytes")
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, or nesting deeper than the parser goes
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "request body must be a JSON object")
    _refuse_unstorable(body, "")
    return body


def _unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored or echoed, or None. NUL: PostgreSQL text cannot hold
    it. A lone surrogate (JSON's ``"\\ud800"`` escape parses to one) is no character at
    all: it cannot be encoded as UTF-8, so the database, the logs and the response encoder
    would each fail on it later, as a 500."""
    if "\x00" in text:
        return "NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogates (\\ud800-\\udfff escapes that are not a valid pair)"
    return None


def _refuse_unstorable(value, path: str) -> None:
    """Refuse NUL and lone surrogates in every string of the body, keys included, here
    where every body is decoded, so no field can carry them further. The message never
    quotes the offending text (it could not be encoded into the answer either)."""
    if isinstance(value, str):
        if reason := _unstorable(value):
            raise InvalidInput(f"{path or 'body'} must not contain {reason}", field=path.split(".")[0] or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            if reason := _unstorable(key):
                raise InvalidInput(f"field names must not contain {reason}")
            _refuse_unstorable(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            _refuse_unstorable(item, path)


def reject_unknown(body: dict, allowed: set[str]) -> None:
    """422 naming the first unknown field: a typo (``max_redemption``) must not be ignored."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
