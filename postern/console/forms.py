"""Form bodies of console requests: bounded, URL-encoded, one value per field."""

from __future__ import annotations

from urllib.parse import parse_qs

from postern.core.errors import InvalidInput, RequestError

MAX_FORM_BYTES = 16384


class FormTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


async def read_form(req, max_bytes: int = MAX_FORM_BYTES) -> dict[str, str]:
    if req.content_length is not None and req.content_length > max_bytes:
        raise FormTooLarge(f"a console form is at most {max_bytes} bytes")
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", ""):
        raise InvalidInput("console forms are sent as application/x-www-form-urlencoded")
    raw = await req.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise FormTooLarge(f"a console form is at most {max_bytes} bytes")
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"unreadable form: {exc}") from None
    return {name: values[-1] for name, values in fields.items()}


def many(raw: str) -> list[str]:
    """A comma- or space-separated field as a list."""
    return [part for part in raw.replace(",", " ").split() if part]
