"""Download links for raw messages and attachments: HMAC-signed, short-lived, single-use.

A link is ``<link id>.<expiry>.<signature>``; the signature (HMAC-SHA256 with a key
kept in the database) makes links unforgeable and lets a bad one be refused without
a lookup; the row makes each link usable once, atomically, even across workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import NotFound, RequestError
from postern.core.ids import well_formed
from postern.core.mail.mime import safe_content_type, sanitize_filename
from postern.core.mail.reading import get_message
from postern.core.models import Attachment, DownloadLink, Message, ServerSecret, utcnow
from postern.core.principal import Principal, RequestInfo


class LinkGone(RequestError):
    """A link that was used already or expired."""

    status = 410
    code = "link_gone"


@dataclass(frozen=True)
class Link:
    token: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Download:
    filename: str
    content_type: str
    data: bytes


def _key() -> bytes:
    return bytes.fromhex(ServerSecret.get_by_id("download_links").value)


def _sign(link_id: str, expires: int) -> str:
    return hmac.new(_key(), f"{link_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def issue(
    principal: Principal, info: RequestInfo, inbox_id: str, message_id: str, attachment_id: str | None, ttl: int
) -> Link:
    view = get_message(principal, info, inbox_id, message_id)
    if attachment_id is not None:
        if not any(a.id == attachment_id for a in view.attachments):
            raise NotFound(f"no attachment '{attachment_id[:60]}' on this message")
        kind, object_id = "attachment", attachment_id
    else:
        kind, object_id = "raw", view.message.id
    expires_at = utcnow().replace(microsecond=0) + dt.timedelta(seconds=ttl)
    with write_transaction():
        link = DownloadLink.create(
            customer=principal.customer_id, kind=kind, object_id=object_id, expires_at=expires_at
        )
        audit.record(f"{kind}_link.create", principal=principal, info=info, target=object_id)
    expires = int(expires_at.replace(tzinfo=dt.UTC).timestamp())
    return Link(f"{link.id}.{expires}.{_sign(link.id, expires)}", expires_at)


def redeem(info: RequestInfo, token: str) -> Download:
    """The bytes behind a link, once. A bad signature is a 404; used or expired, a 410."""
    link_id, _, rest = token.partition(".")
    expires, _, signature = rest.partition(".")
    if not (well_formed(link_id, "dl") and expires.isascii() and expires.isdigit() and len(signature) == 64):
        raise NotFound("no such download")
    if not hmac.compare_digest(_sign(link_id, int(expires)), signature):
        raise NotFound("no such download")
    now = utcnow()
    with write_transaction():
        claimed = (
            DownloadLink.update(used_at=now)
            .where((DownloadLink.id == link_id) & DownloadLink.used_at.is_null() & (DownloadLink.expires_at > now))
            .execute()
        )
        link = DownloadLink.get_or_none(DownloadLink.id == link_id)
        if link is None:
            raise NotFound("no such download")
        audit.record(
            f"{link.kind}_link.use",
            principal=None,
            info=info,
            target=link.object_id,
            customer_id=link.customer_id,
            outcome="ok" if claimed else "denied",
            code=None if claimed else "link_gone",
        )
    if not claimed:
        raise LinkGone("this link was used already or has expired; ask for a new one")
    if link.kind == "raw":
        message = Message.get_or_none(Message.id == link.object_id)
        if message is not None:
            return Download(f"{message.id}.eml", "message/rfc822", bytes(message.raw))
    else:
        attachment = Attachment.get_or_none(Attachment.id == link.object_id)
        if attachment is not None:
            # Sanitised again (idempotent) for rows stored before a rule was added.
            filename = sanitize_filename(attachment.filename, 0, attachment.content_type)
            return Download(filename, safe_content_type(attachment.content_type), bytes(attachment.data))
    raise LinkGone("what this link pointed to has been deleted")
