"""Outbound requests: validate what an agent asks to send and build its MIME.

Everything from the request is untrusted: addresses are validated, header names are
limited to extension headers, header values are text (no control character or line
break, not even one hidden in an encoded word: postern.core.mail.headers), attachment
content must be strict base64, and the whole is size-bounded. The header block is
written by Postern itself, never parsed from a value, and checked on the wire
(postern.core.mail.wire) before the message is accepted.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from email_validator import EmailNotValidError, validate_email

from postern.core.backends import OutboundAttachment
from postern.core.errors import InvalidInput, PosternError
from postern.core.mail import headers as text
from postern.core.mail import wire
from postern.core.mail.mime import CONTENT_TYPE, Mailbox, sanitize_filename
from postern.core.models import utcnow
from postern.core.names import InvalidName, normalise_domain

FIELDS = {"to", "cc", "bcc", "subject", "text", "html", "reply_to", "headers", "attachments", "bulk"}
REPLY_FIELDS = {"cc", "bcc", "text", "html", "headers", "attachments", "reply_all"}
MAX_RECIPIENTS = 100
MAX_HEADERS = 20
HEADER_NAME = re.compile(r"X-[A-Za-z0-9-]{1,60}")
#: A Content-ID: printable ASCII without <>, and no "=?" (the email package would decode
#: an encoded word in it, line breaks included, into the part's header block).
CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,200}")
#: A message id Postern copies into In-Reply-To or References: printable ASCII, no "=?".
MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,498}>")


class HeaderMismatch(PosternError):
    """The serialised message's header block is not the one composed: nothing is sent."""

    status = 500
    code = "header_mismatch"


@dataclass(frozen=True)
class SendRequest:
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    subject: str
    text: str
    html: str
    reply_to: tuple[Mailbox, ...]
    headers: tuple[tuple[str, str], ...]
    attachments: tuple[OutboundAttachment, ...]
    #: The sender says this is bulk mail (a newsletter, a notice to many): it leaves with
    #: a one-click unsubscribe link per recipient.
    bulk: bool = False

    @property
    def recipients(self) -> list[str]:
        return list(dict.fromkeys(m.address for m in (*self.to, *self.cc, *self.bcc)))


def encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_address(value: str, field: str) -> str:
    """Syntax only: local part by email-validator, domain by Postern's own rules (which,
    unlike email-validator, accept special-use names such as *.localhost)."""
    if not isinstance(value, str) or "@" not in value or len(value) > 320:
        raise InvalidInput(f"'{str(value)[:80]}' is not an email address", field=field)
    local, _, domain = value.strip().rpartition("@")
    if not local.isascii():
        # Sending to one would need SMTPUTF8 end to end; refuse now rather than fail later.
        raise InvalidInput(f"'{value[:80]}': non-ASCII mailbox names are not supported yet", field=field)
    try:
        validate_email(f"{local}@example.org", check_deliverability=False)
        domain = normalise_domain(domain)
    except (EmailNotValidError, InvalidName) as exc:
        raise InvalidInput(f"'{value[:80]}' is not an email address: {exc}", field=field) from None
    return f"{local}@{domain}".lower()


def _mailboxes(body: dict, field: str) -> tuple[Mailbox, ...]:
    value = body.get(field)
    if value is None:
        return ()
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_RECIPIENTS:
        raise InvalidInput(f"{field} must be a list of at most {MAX_RECIPIENTS} addresses", field=field)
    found = []
    for item in value:
        if isinstance(item, dict):
            address, name = item.get("address"), item.get("name", "")
            if not isinstance(name, str) or len(name) > 200:
                raise InvalidInput(f"{field}: a display name must be a string of at most 200 characters", field=field)
            text.check_text(name, field, f"{field}: a display name")
        else:
            address, name = item, ""
        found.append(Mailbox(validate_address(address, field), text.display_name(name)))
    return tuple(found)


def _text(body: dict, field: str, limit: int) -> str:
    value = body.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str) or not encodable(value):
        raise InvalidInput(f"{field} must be a string of valid Unicode", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field)
    return value


def _headers(body: dict) -> tuple[tuple[str, str], ...]:
    value = body.get("headers") or {}
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise InvalidInput(f"headers must be an object of at most {MAX_HEADERS} X- headers", field="headers")
    found = []
    for name, item in value.items():
        if not HEADER_NAME.fullmatch(name):
            raise InvalidInput(f"header '{name[:60]}' is not allowed: only X-… extension headers", field="headers")
        if not isinstance(item, str) or len(item) > 998:
            raise InvalidInput(f"header {name}: the value must be a string of at most 998 characters", field="headers")
        text.check_text(item, "headers", f"header {name}: the value")
        found.append((name, item))
    return tuple(found)


def _attachments(body: dict, max_bytes: int) -> tuple[OutboundAttachment, ...]:
    value = body.get("attachments") or []
    if not isinstance(value, list) or len(value) > 50:
        raise InvalidInput("attachments must be a list of at most 50 objects", field="attachments")
    found, total = [], 0
    for index, item in enumerate(value, 1):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise InvalidInput("each attachment needs base64 'content'", field="attachments")
        try:
            data = base64.b64decode(item["content"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"attachment {index}: content is not valid base64", field="attachments") from None
        total += len(data)
        if total > max_bytes:
            raise InvalidInput(f"attachments exceed {max_bytes} bytes", field="attachments")
        content_type = item.get("content_type", "application/octet-stream")
        if not isinstance(content_type, str) or not CONTENT_TYPE.fullmatch(content_type.lower()):
            raise InvalidInput(f"attachment {index}: content_type is not a MIME type", field="attachments")
        filename = item.get("filename")
        if filename is not None and not isinstance(filename, str):
            raise InvalidInput(f"attachment {index}: filename must be a string", field="attachments")
        content_id = item.get("content_id")
        if content_id is not None and (
            not isinstance(content_id, str) or not CONTENT_ID.fullmatch(content_id) or "=?" in content_id
        ):
            raise InvalidInput(
                f"attachment {index}: content_id must be a printable ASCII token without <> or =?", field="attachments"
            )
        found.append(
            OutboundAttachment(
                filename=sanitize_filename(filename, index, content_type),
                content_type=content_type.lower(),
                data=data,
                content_id=content_id,
                inline=bool(item.get("inline", False)),
            )
        )
    return tuple(found)


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


def parse_send_request(body: dict, *, max_bytes: int, reply: bool = False) -> SendRequest:
    allowed = REPLY_FIELDS if reply else FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    request = SendRequest(
        to=() if reply else _mailboxes(body, "to"),
        cc=_mailboxes(body, "cc"),
        bcc=_mailboxes(body, "bcc"),
        subject="" if reply else _text(body, "subject", 998),
        text=_text(body, "text", max_bytes),
        html=_text(body, "html", max_bytes),
        reply_to=() if reply else _mailboxes(body, "reply_to"),
        headers=_headers(body),
        attachments=_attachments(body, max_bytes),
        bulk=_flag(body, "bulk"),
    )
    text.check_text(request.subject, "subject", "subject")
    if not request.text and not request.html:
        raise InvalidInput("give text, html or both", field="text")
    return request


def build_mime(
    sender: Mailbox,
    request: SendRequest,
    *,
    message_id: str,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
) -> bytes:
    """The message on the wire: Postern's header block, written value by value as text
    (postern.core.mail.headers), above the email package's MIME body; checked by
    reading it back (postern.core.mail.wire). Raises ``InvalidInput`` naming the field
    for a value that would put a control character on the wire, and ``HeaderMismatch``
    if what was serialised is not what was composed."""
    fields = composed_headers(sender, request, message_id, in_reply_to, references)
    body = _mime_body(request)
    head = "".join(f"{name}: {value}\r\n" if value else f"{name}:\r\n" for name, value in fields)
    raw = head.encode("ascii") + body.as_bytes(policy=SMTP)
    fault = wire.problem(raw, wire.expected(*(name for name, _ in fields))) or _parts_problem(raw, body)
    if fault is not None:
        raise HeaderMismatch(f"the message was not sent: {fault}")
    return raw


def composed_headers(
    sender: Mailbox, request: SendRequest, message_id: str, in_reply_to: str | None, references: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Every header Postern writes, as (name, wire value). Values come from the request
    (checked again here) or from stored text (a reply's subject and names)."""
    people = (("From", "from", (sender,)), ("To", "to", request.to), ("Cc", "cc", request.cc))
    fields = []
    for name, field, mailboxes in (*people, ("Reply-To", "reply_to", request.reply_to)):
        for m in mailboxes:
            _no_control(m.name, field, f"{field}: a display name")
        if mailboxes:
            fields.append((name, text.address_list(name, mailboxes)))
    fields.append(("Subject", text.unstructured("Subject", _no_control(request.subject, "subject", "subject"))))
    fields.append(("Date", format_datetime(utcnow().replace(tzinfo=dt.UTC))))
    fields.append(("Message-ID", _message_id(message_id)))
    if in_reply_to:
        fields.append(("In-Reply-To", _message_id(in_reply_to)))
    if references:
        fields.append(("References", text.fold_words(len("References: "), [_message_id(r) for r in references])))
    for name, value in request.headers:
        fields.append((name, text.unstructured(name, _no_control(value, "headers", f"header {name}: the value"))))
    return fields


def usable_message_id(value: str | None) -> bool:
    """Whether a stored message id may be copied into In-Reply-To or References."""
    return bool(value) and MESSAGE_ID.fullmatch(value) is not None and "=?" not in value


def _message_id(value: str) -> str:
    if not usable_message_id(value):
        raise HeaderMismatch(f"message id {value[:60]!r} cannot be written into a header")
    return value


def _no_control(value: str, field: str, what: str) -> str:
    if text.CONTROL.search(value) or text.SURROGATE.search(value):
        raise InvalidInput(f"{what} must not contain control characters or line breaks", field=field)
    return value


def _mime_body(request: SendRequest) -> EmailMessage:
    """The body and its MIME headers only: every other header is Postern's own."""
    msg = EmailMessage()
    if request.text:
        msg.set_content(request.text)
    if request.html:
        if request.text:
            msg.add_alternative(request.html, subtype="html")
        else:
            msg.set_content(request.html, subtype="html")
    for att in request.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        kwargs = {"filename": att.filename, "disposition": "inline" if att.inline else "attachment"}
        if att.content_id:
            kwargs["cid"] = f"<{att.content_id}>"
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype, **kwargs)
    return msg


def _parts_problem(raw: bytes, body: EmailMessage) -> str | None:
    parts = list(body.walk())
    boundaries = [part.get_boundary() for part in parts if part.is_multipart()]
    return wire.parts_problem(raw, boundaries, [[k.lower() for k in part.keys()] for part in parts[1:]])
