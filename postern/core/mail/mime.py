"""Parse inbound MIME with the standard library, inside limits that a hostile sender
cannot blow through: total size, nesting depth and part count are checked before the
content is decoded."""

from __future__ import annotations

import base64
import contextvars
import datetime as dt
import email
import email.errors
import email.header
import email.policy
import email.utils
import re
import unicodedata
from dataclasses import dataclass, field
from email.message import EmailMessage

from postern.core.errors import RequestError


class MailRejected(RequestError):
    """The message is refused for good; ``smtp_code`` is what the SMTP listener answers."""

    status = 422
    code = "message_rejected"

    def __init__(self, message: str, *, smtp_code: str = "554 5.6.0", code: str | None = None):
        super().__init__(message, code=code)
        self.smtp_code = smtp_code


@dataclass(frozen=True)
class MailLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_depth: int = 10
    max_parts: int = 200


@dataclass(frozen=True)
class Mailbox:
    address: str
    name: str = ""


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    sender: Mailbox | None
    to: list[Mailbox]
    cc: list[Mailbox]
    reply_to: list[Mailbox]
    date: dt.datetime | None
    text: str
    html: str
    headers: list[tuple[str, str]]
    attachments: list[ParsedAttachment] = field(default_factory=list)


MSGID = re.compile(r"<[^<>\s]+>")
MAX_MSGID = 500  # indexed: PostgreSQL's btree entries are capped near 2,700 bytes
SURROGATE_BYTES = re.compile("[\udc80-\udcff]")  # how the parser keeps undecodable bytes
UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')


def parse(raw: bytes, limits: MailLimits) -> ParsedMessage:
    if len(raw) > limits.max_bytes:
        raise MailRejected(f"message exceeds {limits.max_bytes} bytes", smtp_code="552 5.3.4", code="message_too_large")
    try:
        msg = _parse_counting(raw, limits.max_parts)
    except RecursionError:
        raise MailRejected("MIME structure nested too deeply", code="mime_too_deep") from None
    _check_structure(msg, limits)
    text, html, body_parts = _bodies(msg)
    # Raw header values where no structure is needed: the policy's header parsing is
    # the costliest step of ingest, so only Subject and addresses go through it.
    raw = {}
    for name, value in msg.raw_items():
        raw.setdefault(name.lower(), value)
    return ParsedMessage(
        message_id=first_msgid(raw.get("message-id")),
        in_reply_to=first_msgid(raw.get("in-reply-to")),
        references=MSGID.findall(str(raw.get("references", "")))[-50:],
        subject=_header_text(msg, "Subject")[:998] if "subject" in raw else "",
        sender=_first(_mailboxes(msg, "From", raw.get("from"))) if "from" in raw else None,
        to=_mailboxes(msg, "To", raw.get("to")) if "to" in raw else [],
        cc=_mailboxes(msg, "Cc", raw.get("cc")) if "cc" in raw else [],
        reply_to=_mailboxes(msg, "Reply-To", raw.get("reply-to")) if "reply-to" in raw else [],
        date=_date(raw.get("date")),
        text=text,
        html=html,
        headers=[(name, _safe_str(value)) for name, value in msg.raw_items()][:500],
        attachments=_attachments(msg, body_parts),
    )


# Exceptions the email package raises while decoding a hostile header's parameters.
HEADER_ERRORS = (LookupError, UnicodeError, ValueError, TypeError, IndexError, AssertionError)
RFC2231_CHARSET = re.compile(r"""(\*\s*=\s*"?)[^'";]*'""")


class TolerantPolicy(email.policy.EmailPolicy):
    """``email.policy.default``, except that a header whose parameters cannot be decoded
    does not make every later look at it raise.

    An RFC 2231 parameter names its own charset (``filename*=iso-2022-jp''%1b``); when the
    bytes do not decode in it, reading Content-Disposition raised from ``get_body``,
    ``walk`` users and ``get_filename`` alike. Ingest failed, the SMTP listener answered
    451, and the sender retried the message forever. Such a header is read again with
    every parameter charset taken as UTF-8 (undecodable bytes kept as surrogates, which
    ``clean`` replaces), and failing that as an empty header; the raw message keeps it."""

    def header_fetch_parse(self, name, value):
        try:
            return super().header_fetch_parse(name, value)
        except HEADER_ERRORS:
            pass
        one_line = _one_line_words(value)
        if one_line != value:
            # An encoded word decoding to CR/LF makes an address header raise: read it
            # with that word's line breaks as spaces, so the sender is not lost.
            try:
                return super().header_fetch_parse(name, one_line)
            except HEADER_ERRORS:
                pass
        try:
            return super().header_fetch_parse(name, RFC2231_CHARSET.sub(r"\1utf-8'", value))
        except HEADER_ERRORS:
            return super().header_fetch_parse(name, "")


TOLERANT = TolerantPolicy()
ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def decode_word(word: re.Match) -> str:
    """One RFC 2047 encoded word as a lenient reader decodes it; one that does not
    decode is shown by readers as the literal text it is."""
    try:
        [(data, charset)] = email.header.decode_header(word.group(0))
        return data.decode(charset or "ascii", "replace") if isinstance(data, bytes) else data
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return word.group(0)


def _one_line_words(value: str) -> str:
    """``value`` with each encoded word that decodes to a control character re-encoded
    with those characters as spaces (its specials stay encoded: the address is not moved)."""

    def one_line(word: re.Match) -> str:
        text = decode_word(word)
        if not LINE_BREAKS_AND_CONTROLS.search(text):
            return word.group(0)
        return "=?utf-8?b?" + base64.b64encode(one_line_text(text).encode("utf-8", "replace")).decode() + "?="

    return ENCODED_WORD.sub(one_line, value) if "=?" in value else value


#: The parse under way in this thread or task: [parts it may still make, its limit].
_PART_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("postern_part_budget", default=None)


class _CountingMessage(EmailMessage):
    """Counts parts as the parser creates them, so a MIME bomb is refused after
    ``max_parts`` parts rather than after parsing all. One class for every parse, its
    count in a context variable: a class made per message cost ~4% of ingest's CPU."""

    def __init__(self, policy=None):
        budget = _PART_BUDGET.get()
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise MailRejected(f"more than {budget[1]} MIME parts", code="mime_too_many_parts")
        super().__init__(policy)


_COUNTING = TOLERANT.clone(message_factory=_CountingMessage)


def _parse_counting(raw: bytes, max_parts: int) -> EmailMessage:
    token = _PART_BUDGET.set([max_parts, max_parts])
    try:
        return email.message_from_bytes(raw, policy=_COUNTING)
    finally:
        _PART_BUDGET.reset(token)


def _check_structure(msg: EmailMessage, limits: MailLimits) -> None:
    """Walk the tree iteratively (no recursion to exhaust) counting parts and depth."""
    stack, parts = [(msg, 0)], 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.max_depth:
            raise MailRejected(f"MIME nesting deeper than {limits.max_depth}", code="mime_too_deep")
        if parts > limits.max_parts:
            raise MailRejected(f"more than {limits.max_parts} MIME parts", code="mime_too_many_parts")
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload)


def _bodies(msg: EmailMessage) -> tuple[str, str, set[int]]:
    used: set[int] = set()
    texts = []
    for kind in ("plain", "html"):
        part = msg.get_body(preferencelist=(kind,))
        if part is None:
            texts.append("")
            continue
        used.add(id(part))
        texts.append(_decode_text(part))
    return texts[0], texts[1], used


def _decode_text(part: EmailMessage) -> str:
    """The part's text with line endings as agents expect them (``\n``); the raw
    message keeps the bytes exactly as received."""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError, ValueError):
        # Unknown, malformed or lying charset: keep what can be read rather than lose the message.
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", errors="replace")
    return clean(text).replace("\r\n", "\n")


def _attachments(msg: EmailMessage, body_parts: set[int]) -> list[ParsedAttachment]:
    found = []
    for part in msg.walk():
        if part.is_multipart() or id(part) in body_parts:
            continue
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        content_id = first_msgid(part.get("Content-ID"))
        if disposition is None and filename is None and content_id is None:
            if part.get_content_maintype() == "text":
                continue  # an alternative body we did not pick
        data = part.get_payload(decode=True) or b""
        found.append(
            ParsedAttachment(
                filename=sanitize_filename(filename, len(found) + 1, part.get_content_type()),
                content_type=safe_content_type(part.get_content_type()),
                content_id=content_id,
                inline=disposition == "inline",
                data=data,
            )
        )
    return found


CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,60}/[a-z0-9!#$&^_.+-]{1,100}")


def safe_content_type(value: str) -> str:
    """A declared type is kept only if it is a plain ``type/subtype`` token pair."""
    value = value.lower()
    return value if CONTENT_TYPE.fullmatch(value) else "application/octet-stream"


# Unicode categories a filename must not carry. Format characters (Cf: bidi overrides and
# isolates, zero-width characters, soft hyphen, tags) show nothing themselves but change how
# the rest shows: "évil.pdf\u202egpj.exe" displays as "évil.pdfexe.jpg". They are dropped,
# so the name reads as it is. Other controls (C1, line and paragraph separators, stray
# surrogates) become "_", as C0 controls do.
_DROPPED = {"Cf"}
_REPLACED = {"Cc", "Zl", "Zp", "Cs"}


def _neutralise(name: str) -> str:
    if name.isascii():
        return name  # ASCII controls are left to UNSAFE_FILENAME
    kept = []
    for char in name:
        category = unicodedata.category(char)
        if category not in _DROPPED:
            kept.append("\x1f" if category in _REPLACED else char)  # UNSAFE_FILENAME: runs -> "_"
    return "".join(kept)


def sanitize_filename(name: str | None, index: int, content_type: str) -> str:
    """A filename safe to show and to save: no path, no control, format (bidi, zero-width)
    or shell-special characters, no leading dots, at most 255 bytes; a generated one if
    nothing remains. Idempotent, so outputs can apply it to names stored before a rule."""
    name = unicodedata.normalize("NFC", _neutralise(clean(name or "")))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = UNSAFE_FILENAME.sub("_", name).strip().lstrip(".")
    while len(name.encode()) > 255:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:-1] + dot + ext) if dot and len(ext) < 20 and stem else name[:-1]
    if not name:
        subtype = content_type.split("/", 1)[-1]
        name = f"attachment-{index}.{re.sub(r'[^a-z0-9]+', '', subtype)[:10] or 'bin'}"
    return name


def first_msgid(value) -> str | None:
    if value is None:
        return None
    match = MSGID.search(clean(str(value)))
    return match.group(0)[:MAX_MSGID] if match else None


def _header_text(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):
        return ""
    return _safe_str(value) if value is not None else ""


def clean(text: str) -> str:
    """Text fit to store anywhere: raw 8-bit header bytes (which the parser keeps as
    surrogates) decoded as UTF-8, and NUL removed (PostgreSQL text cannot hold it;
    the raw message keeps every byte)."""
    if not text.isascii() and SURROGATE_BYTES.search(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\x00", "")


#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
LINE_BREAKS_AND_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line_text(text: str) -> str:
    """Stored header text (a subject, a display name) as one line: every control
    character and line break, including those an encoded word decoded to, becomes a
    space, so a reply, a webhook or an MCP answer never carries one. The raw message
    keeps the bytes as they came."""
    return LINE_BREAKS_AND_CONTROLS.sub(" ", clean(text))


def _safe_str(value) -> str:
    try:
        text = str(value)
    except (ValueError, IndexError, TypeError):
        text = ""
    return one_line_text(text)


# The plain forms most address headers take, "Name <local@domain>" and "local@domain":
# read with one regex they give what the email package's header parser gives (tests
# compare the two), at a tenth of its cost, which was ~7% of ingest's CPU. Anything
# else (quotes, comments, encoded words, groups, IP literals, 8-bit) goes to the parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf"[ \t]*(?:(?:([A-Za-z0-9]+(?: [A-Za-z0-9]+)*)[ \t]*)?<({_PLAIN_ADDRESS})>|({_PLAIN_ADDRESS}))[ \t]*"
)
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _plain_mailboxes(value) -> list[Mailbox] | None:
    """The mailboxes of a header ``value`` in plain form, or None when it is not."""
    if not isinstance(value, str):
        return None
    found = []
    for item in _FOLD.sub("", value).split(","):
        m = _PLAIN_MAILBOX.fullmatch(item)
        if m is None:
            return None
        name, angled, bare = m.groups()
        found.append(Mailbox((angled or bare).lower()[:320], (name or "")[:200]))
    return found


def _mailboxes(msg: EmailMessage, name: str, raw_value=None) -> list[Mailbox]:
    plain = _plain_mailboxes(raw_value)
    if plain is not None:
        return plain
    try:
        header = msg.get(name)
        addresses = getattr(header, "addresses", ()) if header is not None else ()
        return [
            Mailbox(clean(a.addr_spec).lower()[:320], one_line_text(a.display_name or "")[:200])
            for a in addresses
            if a.addr_spec
        ]
    except (ValueError, IndexError, TypeError, AttributeError):
        return []  # a header too broken to parse is kept raw, not trusted


def _first(items):
    return items[0] if items else None


def _date(value) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(str(value))
    except (ValueError, IndexError, TypeError):
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment
