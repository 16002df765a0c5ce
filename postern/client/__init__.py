"""Postern's Python SDK: a small client of the REST API (httpx).

    from postern.client import Postern
    client = Postern()  # POSTERN_API_KEY, POSTERN_API_BASE_URL
    inbox = client.inboxes.create("support")
    result = client.messages.wait(inbox.id, timeout=60)

Verifying a webhook delivery needs nothing but the standard library:

    from postern.client import verify_webhook
    event = verify_webhook(body, headers, "whsec_…")

Or, from an enrollment key a human handed over:

    from postern.client import bootstrap
    client, enrollment = bootstrap.enrolled(enrollment_token="pk_enroll_…", agent_handle="support-bot")
"""

from postern.client import bootstrap, errors
from postern.client.client import Postern
from postern.client.models import (
    Attachment,
    Authentication,
    Code,
    CodeResult,
    DownloadLink,
    Enrollment,
    Inbox,
    Link,
    MailRule,
    Me,
    Message,
    Page,
    Person,
    Signature,
    Thread,
    Usage,
    WaitResult,
)
from postern.client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "Attachment",
    "Authentication",
    "Code",
    "DownloadLink",
    "Enrollment",
    "Inbox",
    "Link",
    "MailRule",
    "Me",
    "Message",
    "Page",
    "Person",
    "Postern",
    "Signature",
    "Thread",
    "Usage",
    "CodeResult",
    "WaitResult",
    "WebhookVerificationError",
    "bootstrap",
    "errors",
    "verify_webhook",
]
