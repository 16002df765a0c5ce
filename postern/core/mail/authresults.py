"""Authentication-Results headers in a message (RFC 8601): finding the one Postern wrote,
taking out every other one that claims Postern's authserv-id (section 5: only we may
write under it), and putting ours first. Text only; what goes into ours is
``postern.core.mail.verdicts.results_header``."""

from __future__ import annotations

import re


def our_note(raw: bytes, authserv_id: str) -> str | None:
    """The comment after our authserv-id in the first Authentication-Results claiming
    it, or None. Only meaningful where our stamping removed every other such header."""
    head = raw[:65536].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    for match in re.finditer(r"(?im)^authentication-results:(.*(?:\r?\n[ \t].*)*)", head):
        value = match.group(1)
        if claims_our_id(value, authserv_id):
            found = re.match(r"\s*\S+\s*\(([^)]*)\)", value)
            return found.group(1).strip() if found else None
    return None


def claims_our_id(value: str, authserv_id: str) -> bool:
    """RFC 8601 5: an inbound Authentication-Results naming our authserv-id is forged."""
    claimed = re.sub(r"\([^)]*\)", "", value).split(";", 1)[0].strip().split()
    return bool(claimed) and claimed[0].lower() == authserv_id.lower()


def stamp(raw: bytes, header_value: str | None, authserv_id: str) -> bytes:
    """``raw`` with every Authentication-Results claiming ``authserv_id`` removed and
    ours (unless None) put first (RFC 8601 5)."""
    crlf = b"\r\n\r\n" in raw[:65536] or b"\n\n" not in raw
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    head, found, body = raw.partition(sep)
    newline = b"\r\n" if crlf else b"\n"
    kept, current = [], []
    for line in head.split(newline):
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            kept.append(current)
        current = [line]
    if current:
        kept.append(current)
    out = []
    for block in kept:
        name, colon, value = newline.join(block).partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            if claims_our_id(value.decode("utf-8", "replace"), authserv_id):
                continue
        out.append(newline.join(block))
    if header_value is not None:
        out.insert(0, f"Authentication-Results: {header_value}".encode().replace(b"\r\n", newline))
    return newline.join(out) + (found or sep) + body


def stamp_headers(headers: list, header_value: str | None, authserv_id: str) -> list:
    """The parsed header list to match ``stamp``."""
    kept = [(n, v) for n, v in headers if not (n.lower() == "authentication-results" and claims_our_id(v, authserv_id))]
    if header_value is None:
        return kept
    return [("Authentication-Results", re.sub(r"\s*\r\n\t", " ", header_value)), *kept]
