"""What Postern remembers of each inbox's WildDuck mailbox (migrations m0009, m0010).

- ``WildDuckMailbox``: the user, its INBOX and Sent folders, and the watcher's place:
  messages received (WildDuck's ``idate``) from ``ingest_from`` on are Postern's, and
  everything up to ``seen_until`` has been looked at.
- ``WildDuckSeen``: one key per message already ingested (or stepped over), written in
  the ingest's own transaction: the exactly-once record, whatever folder the message
  is in now.
- ``WildDuckDelivered``: recipients an LMTP delivery already reached (or, for agent
  mail, was handed to), so a retry of the same message skips them.
- ``WildDuckSentDue``: Sent copies not yet appended (WildDuck was down at the send).
- ``WildDuckOrphan``: WildDuck users of inboxes that rolled back, still to delete.
- ``WildDuckVerdict``: the sender verdict the front door made for a message it handed to
  WildDuck, named in the message's Authentication-Results, for the watcher to store with
  it (m0019).
"""

from __future__ import annotations

import peewee

from postern.core.models import BaseModel, Inbox, Message, utcnow


class WildDuckMailbox(BaseModel):
    inbox = peewee.ForeignKeyField(Inbox, primary_key=True, on_delete="CASCADE")
    user_id = peewee.CharField(max_length=24, unique=True)
    inbox_mailbox = peewee.CharField(max_length=24)
    sent_mailbox = peewee.CharField(max_length=24, null=True)
    #: Mail received before this (a user that existed before the inbox) is not ingested.
    ingest_from = peewee.DateTimeField(null=True)
    #: Newest receive time the watcher has looked at; it re-reads a margin before it.
    seen_until = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "wildduck_mailbox"


class WildDuckSeen(BaseModel):
    inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
    key = peewee.CharField(max_length=64)
    received_at = peewee.DateTimeField()

    class Meta:
        table_name = "wildduck_seen"
        primary_key = peewee.CompositeKey("inbox", "key")


class WildDuckDelivered(BaseModel):
    digest = peewee.CharField(max_length=64)
    recipient = peewee.CharField(max_length=320)
    attempted_at = peewee.DateTimeField(default=utcnow)
    #: False: handed over but WildDuck's answer not recorded (the process may have died).
    delivered = peewee.BooleanField(default=False)

    class Meta:
        table_name = "wildduck_delivered"
        primary_key = peewee.CompositeKey("digest", "recipient")


class WildDuckSentDue(BaseModel):
    message = peewee.ForeignKeyField(Message, primary_key=True, on_delete="CASCADE")
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "wildduck_sent_due"


class WildDuckOrphan(BaseModel):
    user_id = peewee.CharField(primary_key=True, max_length=24)
    address = peewee.CharField(max_length=320)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "wildduck_orphan"


class WildDuckVerdict(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    #: postern.core.mail.verdicts.Verdict as JSON, as stored on the message.
    authentication = peewee.TextField()
    #: The SMTP session's TLS version and cipher; None in plaintext.
    tls = peewee.CharField(max_length=200, null=True)
    #: What the verdict was made for: a message naming this row must carry the same, so
    #: an id copied into other mail proves nothing for it.
    message_id = peewee.CharField(max_length=998, default="")
    from_address = peewee.CharField(max_length=320, default="")
    created_at = peewee.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "wildduck_verdict"
