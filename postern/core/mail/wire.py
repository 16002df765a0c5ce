"""The header block on the wire is exactly the one Postern composed, or nothing is sent.

``postern.core.mail.headers`` writes each value so that it cannot become a header line;
this module is the check that does not trust that: after serialisation, the header block
is read back (by hand, line by line, and by the standard library's parser) and must hold
exactly the fields composed, each value decoding to text without a control character or
line break. A message that fails is refused when composed and never handed to a backend.
"""

from __future__ import annotations

import email.policy
import re
from collections import Counter
from email.parser import BytesParser

#: What the email package writes above a body; a serialised message has each once,
#: except Content-Transfer-Encoding, which a multipart message has not.
MIME_HEADERS = ("mime-version", "content-type")
OPTIONAL_MIME = "content-transfer-encoding"
FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
MAX_LINE = 998
#: What no decoded value may hold: every control but TAB, which breaks no line (Postern
#: refuses it on the way in, but a message queued by an older version may carry one).
BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def expected(*names: str) -> Counter:
    """The field names of a composed message: Postern's own plus the MIME ones."""
    return Counter(name.lower() for name in (*names, *MIME_HEADERS))


def problem(raw: bytes, composed: Counter) -> str | None:
    """What is wrong with ``raw``'s header block against the ``composed`` names, or None."""
    block, separator, _ = raw.partition(b"\r\n\r\n")
    if not separator:
        return "no end of the header block"
    names = field_names(block)
    if isinstance(names, str):
        return names
    found = Counter(names)
    if found.get(OPTIONAL_MIME, 0) <= 1:
        found.pop(OPTIONAL_MIME, None)
    if found != composed:
        extra, missing = sorted((found - composed).elements()), sorted((composed - found).elements())
        return f"header fields differ from those composed (extra {extra}, missing {missing})"
    return _decoded_problem(block + b"\r\n\r\n", composed)


def field_names(block: bytes) -> list[str] | str:
    """The lowercased field names of a header block (without its blank line), or what
    makes it something else than ASCII header fields on CRLF-terminated lines."""
    if not block.isascii():
        return "8-bit bytes in a header block"
    names: list[str] = []
    for line in block.split(b"\r\n") if block else ():
        if b"\r" in line or b"\n" in line:
            return "a bare CR or LF in a header block"
        if len(line) > MAX_LINE:
            return f"a header line longer than {MAX_LINE} bytes"
        if line[:1] in (b" ", b"\t"):
            if not names:
                return "a continuation line before any header"
            continue
        match = FIELD_NAME.match(line)
        if match is None:
            return f"a line that is not a header: {line[:60]!r}"
        names.append(match.group(1).decode().lower())
    return names


def parts_problem(raw: bytes, boundaries: list[str], given: list[list[str]]) -> str | None:
    """Each MIME part's header block (found after each opening delimiter of the
    ``boundaries``, in order) must have the fields it was given, in order: a filename
    or Content-ID could otherwise smuggle a line into a part. No body is parsed."""
    if not boundaries:
        return None
    alternatives = b"|".join(re.escape(b.encode("ascii")) for b in boundaries)
    found = []
    for delimiter in re.finditer(rb"\r\n--(?:" + alternatives + rb")(--)?[ \t]*\r\n", raw):
        if delimiter.group(1):
            continue  # a closing delimiter: no part follows
        start = delimiter.end()
        end = start if raw.startswith(b"\r\n", start) else raw.find(b"\r\n\r\n", start)
        names = field_names(raw[start:end]) if end >= 0 else "a MIME part without a body"
        if isinstance(names, str):
            return names
        found.append(names)
    return None if found == given else "a MIME part's header fields differ from those composed"


def _decoded_problem(block: bytes, composed: Counter) -> str | None:
    """The standard parser's reading: the same fields, each decoding to text a reader
    cannot take for a line break (an encoded CR/LF would be one to a reader that re-folds)."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(block, headersonly=True)
    names = Counter(name.lower() for name in parsed.keys())
    if names.get(OPTIONAL_MIME, 0) <= 1:
        names.pop(OPTIONAL_MIME, None)
    if names != composed:
        return "the parsed header fields differ from those composed"
    for name in parsed.keys():
        try:
            values = [str(value) for value in parsed.get_all(name, [])]
        except (ValueError, TypeError, IndexError, LookupError):
            return f"{name} does not parse"
        if any(BREAKING.search(value) for value in values):
            return f"{name} decodes to a control character or line break"
    return None
