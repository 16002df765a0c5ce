"""Postern's Python SDK: a small client of the REST API (httpx).

    from postern.client import Postern
    client = Postern()  # POSTERN_API_KEY, POSTERN_API_BASE_URL
    inbox = client.inboxes.create("support")
    result = client.messages.wait(inbox.id, timeout=60)

Or, from an enrollment key a human handed over:

    from postern.client import bootstrap
    client, enrollment = bootstrap.enrolled(enrollment_token="pk_enroll_…", agent_handle="support-bot")
"""

from postern.client import bootstrap, errors
from postern.client.client import Postern
from postern.client.models import (
    Attachment,
    DownloadLink,
    Enrollment,
    Inbox,
    Me,
    Message,
    Person,
    Thread,
    WaitResult,
)

__all__ = [
    "Attachment",
    "DownloadLink",
    "Enrollment",
    "Inbox",
    "Me",
    "Message",
    "Person",
    "Postern",
    "Thread",
    "WaitResult",
    "bootstrap",
    "errors",
]
