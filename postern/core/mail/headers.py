"""Header values as text: what Postern lets into a header it writes, and how it writes it.

The root of header injection through RFC 2047: ``EmailMessage``'s header factory parses
a ``str`` assigned to a header as a raw header, so an encoded word in it is decoded, and
Python 3.11 (without the CVE-2024-6923 fix) folds a decoded CR/LF back out as a real line
break. Postern therefore never hands a value to that parser. Each value is text: it is
checked here (no control character, no line break, no encoded word hiding one), and
encoded here into pure ASCII: left as it is only when a reader cannot take it for anything
but itself, otherwise as base64 encoded words, so ``=?`` in a subject reaches the reader
as the characters ``=?``. ``postern.core.mail.wire`` then checks the serialised result.
"""

from __future__ import annotations

import base64
import re

from postern.core.errors import InvalidInput
from postern.core.mail.mime import ENCODED_WORD, LINE_BREAKS_AND_CONTROLS, Mailbox, decode_word, one_line_text

#: C0 and C1 controls (TAB included), DEL, and the Unicode line and paragraph separators:
#: everything that is, or that some reader treats as, a line break or a control.
CONTROL = LINE_BREAKS_AND_CONTROLS
SURROGATE = re.compile("[\ud800-\udfff]")
#: How often a value's encoded words are decoded when looking for a hidden line break:
#: a reader that decodes once more than it should (as Postern itself once did) sees them.
DECODE_DEPTH = 4
ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
PLAIN = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)*")
MAX_PLAIN_WORD = 60  # a longer word could not be folded under 78 columns: encode it
EW_BYTES = 45  # UTF-8 bytes per encoded word: base64 of 45 bytes plus "=?utf-8?b??=" is 72


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` may not go into a header, or None."""
    if CONTROL.search(value):
        return "must not contain control characters or line breaks"
    if SURROGATE.search(value):
        return "must be valid Unicode"
    for _ in range(DECODE_DEPTH):
        if not ENCODED_WORD.search(value):
            return None
        value = ENCODED_WORD.sub(decode_word, value)
        if CONTROL.search(value):
            return "must not contain encoded words that decode to control characters or line breaks"
    return None


def check_text(value: str, field: str, what: str) -> str:
    """``value`` if it is fit for a header, else a 422 naming ``field``."""
    reason = unsafe_reason(value)
    if reason is not None:
        raise InvalidInput(f"{what} {reason}", field=field)
    return value


#: Stored text made fit for any header or reader (every control and line break a space).
neutralise = one_line_text


def display_name(name: str) -> str:
    """A display name as Postern keeps and sends it: runs of spaces are one space, and
    none at either end (readers collapse them in a phrase anyway)."""
    return " ".join(word for word in name.split(" ") if word)


def encoded_words(value: str) -> list[str]:
    """``value`` as base64 encoded words, split between characters, never inside one."""
    words, chunk, size = [], [], 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > EW_BYTES:
            words.append(chunk)
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append(chunk)
    return ["=?utf-8?b?" + base64.b64encode("".join(c).encode("utf-8")).decode("ascii") + "?=" for c in words]


def unstructured(name: str, value: str) -> str:
    """The wire form of a text header's value (Subject, X-…), folded with CRLF."""
    if value == "":
        return ""
    words = value.split(" ")
    if PLAIN.fullmatch(value) and "=?" not in value and max(map(len, words)) <= MAX_PLAIN_WORD:
        return fold_words(len(name) + 2, words, " ")
    return "\r\n ".join(encoded_words(value))


def mailbox(m: Mailbox) -> str:
    """``Name <address>`` on the wire: atoms, a quoted string, or encoded words. A name
    with ``=?`` is never quoted: Python's parser decodes encoded words even inside quotes."""
    if not m.name:
        return m.address
    if PLAIN.fullmatch(m.name) and "=?" not in m.name:
        if all(ATEXT.fullmatch(word) for word in m.name.split(" ")):
            return f"{m.name} <{m.address}>"
        quoted = m.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{m.address}>'
    return "\r\n ".join(encoded_words(m.name)) + f" <{m.address}>"


def address_list(name: str, mailboxes: tuple[Mailbox, ...]) -> str:
    return fold_words(len(name) + 2, [mailbox(m) for m in mailboxes], ", ", ",")


def fold_words(start: int, items: list[str], joiner: str = " ", separator: str = "") -> str:
    """Join ``items`` with ``joiner``, breaking the line before an item that would pass
    78 columns (``separator`` ends the line: the comma of an address list)."""
    out, column = "", start
    for index, item in enumerate(items):
        first = item.split("\r\n", 1)[0]
        if index and column + len(joiner) + len(first) > 78:
            out += separator + "\r\n " + item
            column = 1 + len(item.rsplit("\r\n", 1)[-1])
        else:
            out += (joiner if index else "") + item
            column = (column + len(joiner) if index else column) + len(first)
            if "\r\n" in item:
                column = len(item.rsplit("\r\n", 1)[-1])
    return out
