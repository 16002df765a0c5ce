"""What each MCP tool answers, as types: the SDK publishes them as the tool's
``outputSchema`` and checks every structured result against them.

Every type allows keys beyond those listed (``extra="allow"``): a field added to a
result in ``shape`` reaches the model even before it is named here, and the published
schema says so (``additionalProperties: true``). Name it here when you add one.
"""

from __future__ import annotations

from typing import NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

OPEN = ConfigDict(extra="allow")


def _open(cls):
    return with_config(OPEN)(cls)


@_open
class Enrollment(TypedDict):
    agent_id: str
    agent_handle: str
    key_prefix: str
    scopes: list[str]
    mailboxes_used: int
    mailboxes_max: int | None
    expires_at: str | None


@_open
class Identity(Enrollment):
    domains: list[str]


@_open
class Inbox(TypedDict):
    id: str
    address: str
    display_name: str | None
    created_at: str | None
    cursor: NotRequired[str]  # create_inbox only: where this agent's waits start


@_open
class InboxPage(TypedDict):
    inboxes: list[Inbox]
    next_page_token: str | None


@_open
class FoundCode(TypedDict):
    """A one-time code found in the mail when it arrived (docs/mail.md)."""

    code: str
    evidence: str


@_open
class FoundLink(TypedDict):
    """A verification, sign-in (magic) or reset link found in the mail when it arrived."""

    url: str
    kind: str
    sender_domain: bool


@_open
class DkimSignature(TypedDict):
    domain: str
    selector: str
    result: str


@_open
class Authentication(TypedDict):
    """SPF, DKIM, DMARC and ARC verdicts reached when the mail arrived."""

    spf: str
    dkim: list[DkimSignature]
    dmarc: str
    dmarc_policy: str
    arc: str
    from_domain: str
    aligned: bool
    verified_sender: bool


# "from" is a keyword: the functional form is the only way to name that key.
MessageSummary = _open(
    TypedDict(
        "MessageSummary",
        {
            "id": str,
            "thread_id": str | None,
            "direction": str,
            "from": str,
            "subject": str | None,
            "snippet": NotRequired[str | None],
            "received_at": str | None,
            "attachment_count": int,
            "verified_sender": bool,  # true only when DMARC proved the From domain
            "codes": NotRequired[list[FoundCode]],  # only when some were found
            "links": NotRequired[list[FoundLink]],
        },
    )
)


@_open
class Link(TypedDict):
    url: str
    expires_at: str | None


@_open
class Attachment(TypedDict):
    id: str
    filename: str | None
    content_type: str | None
    size: int | None
    inline: bool
    download: NotRequired[Link]


MessageDetail = _open(
    TypedDict(
        "MessageDetail",
        {
            **MessageSummary.__annotations__,
            "notice": NotRequired[str],
            "status": str | None,
            "to": list[str],
            "cc": list[str],
            "reply_to": list[str],
            "sent_at": str | None,
            "text": str,
            "truncated": bool,
            "attachments": list[Attachment],
            "authentication": NotRequired[Authentication],  # inbound mail checked at receive
            "recipients": NotRequired[list[dict]],  # outbound mail: each recipient's status
            "review_note": NotRequired[str],  # mail held for approval: the reviewer's note
            "html": NotRequired[str],
        },
    )
)


@_open
class MessagePage(TypedDict):
    notice: NotRequired[str]  # only when there is mail to warn about
    messages: list[MessageSummary]
    next_page_token: str | None


@_open
class Sent(TypedDict):
    id: str
    thread_id: str | None
    status: str
    left_server: bool
    status_reason: str | None
    warning: NotRequired[str]  # only when the mail did not leave: captured, or held for approval
    #: Recipients that did not get it (yet): deferred, bounced, suppressed, captured…
    recipients_not_sent: NotRequired[list[dict]]
    to: list[str]
    cc: list[str]
    subject: str | None
    error: str | None


@_open
class ThreadSummary(TypedDict):
    id: str
    subject: str | None
    message_count: int
    last_message_at: str | None


@_open
class ThreadPage(TypedDict):
    notice: NotRequired[str]
    threads: list[ThreadSummary]
    next_page_token: str | None


@_open
class ThreadDetail(ThreadSummary):
    notice: NotRequired[str]
    messages: list[MessageSummary]


@_open
class WaitResult(TypedDict):
    notice: NotRequired[str]
    messages: list[MessageSummary]
    cursor: str
    timed_out: bool


CodeResult = TypedDict(
    "CodeResult",
    {
        "notice": NotRequired[str],
        "message_id": str | None,
        "inbox_id": str,
        "from": str | None,
        "code": str | None,
        "link": str | None,
        "received_at": str | None,
        "timed_out": bool,
    },
)
CodeResult = _open(CodeResult)  # "from" is a keyword: the functional form names it


@_open
class Delivered(TypedDict):
    message_ids: list[str]


@_open
class MailRule(TypedDict):
    direction: str
    action: str
    pattern: str
    level: str
    description: str


@_open
class MailRules(TypedDict):
    rules: list[MailRule]
