"""Outbound requests: validate what an agent asks to send and build its MIME.

Everything from the request is untrusted: addresses are validated, header names are
limited to extension headers, values with CR/LF/NUL are refused (no header
injection), attachment content must be strict base64, and the whole is size-bounded.
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
from postern.core.errors import InvalidInput
from postern.core.mail.mime import CONTENT_TYPE, Mailbox, sanitize_filename
from postern.core.models import utcnow
from postern.core.names import InvalidName, normalise_domain

FIELDS = {"to", "cc", "bcc", "subject", "text", "html", "reply_to", "headers", "attachments"}
REPLY_FIELDS = {"cc", "bcc", "text", "html", "headers", "attachments", "reply_all"}
MAX_RECIPIENTS = 100
MAX_HEADERS = 20
HEADER_NAME = re.compile(r"X-[A-Za-z0-9-]{1,60}")


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

    @property
    def recipients(self) -> list[str]:
        return list(dict.fromkeys(m.address for m in (*self.to, *self.cc, *self.bcc)))


def one_line(value: str) -> bool:
    """No line break of any kind (Python's email package also breaks on VT, FF, NEL,
    U+2028…), no NUL, and encodable as UTF-8 (no lone surrogates)."""
    return "\x00" not in value and (value == "" or value.splitlines() == [value]) and encodable(value)


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
            if not isinstance(name, str) or len(name) > 200 or not one_line(name):
                raise InvalidInput(f"{field}: a display name must be a one-line string", field=field)
        else:
            address, name = item, ""
        found.append(Mailbox(validate_address(address, field), name))
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
        if not isinstance(item, str) or len(item) > 998 or not one_line(item):
            raise InvalidInput(f"header {name}: the value must be one line of at most 998 characters", field="headers")
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
            not isinstance(content_id, str) or not re.fullmatch(r"[^<>\s]{1,200}", content_id)
        ):
            raise InvalidInput(f"attachment {index}: content_id must be a token without <>", field="attachments")
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
    )
    if not one_line(request.subject):
        raise InvalidInput("subject must be one line", field="subject")
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
    msg = EmailMessage()
    msg["From"] = _format(sender)
    if request.to:
        msg["To"] = ", ".join(_format(m) for m in request.to)
    if request.cc:
        msg["Cc"] = ", ".join(_format(m) for m in request.cc)
    if request.reply_to:
        msg["Reply-To"] = ", ".join(_format(m) for m in request.reply_to)
    msg["Subject"] = request.subject
    msg["Date"] = format_datetime(utcnow().replace(tzinfo=dt.UTC))
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in request.headers:
        msg[name] = value
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
    return msg.as_bytes(policy=SMTP)


def _format(m: Mailbox) -> str:
    from email.headerregistry import Address

    username, _, domain = m.address.rpartition("@")
    return str(Address(display_name=m.name, username=username, domain=domain))
