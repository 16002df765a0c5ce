"""peewee models: the core's truth. Every table is created and changed by migrations."""

from __future__ import annotations

import datetime as dt

import peewee

from postern.core.db import database
from postern.core.ids import new_id


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Customer(BaseModel):
    """A tenant. ``label`` is DNS-safe and names the tenant's mail subdomain."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("cus"))
    label = peewee.CharField(max_length=63, unique=True)
    name = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField(default=utcnow)
    #: Set while an operator has suspended the tenant (docs/console.md, "Suspending").
    suspended_at = peewee.DateTimeField(null=True)


class ServiceState(BaseModel):
    """What the supervisor on ``host`` last saw of one service, for /healthz."""

    host = peewee.CharField(max_length=255)
    name = peewee.CharField(max_length=100)
    state = peewee.CharField(max_length=20)  # starting, running, restarting, stopped, failed
    pid = peewee.IntegerField(null=True)
    restarts = peewee.IntegerField(default=0)
    last_exit = peewee.CharField(max_length=100, null=True)
    reason = peewee.CharField(max_length=200, null=True)  # why it is not serving, if it is not
    next_attempt_at = peewee.DateTimeField(null=True)  # when a restarting service starts again
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("host", "name")


class AdminToken(BaseModel):
    """An org admin credential (``pk_admin_…``). ``customer`` None: operator-wide."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("adm"))
    customer = peewee.ForeignKeyField(Customer, null=True, backref="admin_tokens", on_delete="CASCADE")
    key_hash = peewee.CharField(max_length=64, unique=True)
    key_prefix = peewee.CharField(max_length=40)
    description = peewee.CharField(max_length=200, default="")
    created_at = peewee.DateTimeField(default=utcnow)
    revoked_at = peewee.DateTimeField(null=True)


class EnrollmentKey(BaseModel):
    """A bootstrap key (``pk_enroll_…``) a human hands to agents."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("enr"))
    customer = peewee.ForeignKeyField(Customer, backref="enrollment_keys", on_delete="CASCADE")
    key_hash = peewee.CharField(max_length=64, unique=True)
    key_prefix = peewee.CharField(max_length=40)
    scopes = peewee.CharField(max_length=200)  # space-separated
    allowed_domains = peewee.TextField()  # JSON list
    max_mailboxes = peewee.IntegerField()
    mailboxes_used = peewee.IntegerField(default=0)
    max_redemptions = peewee.IntegerField(null=True)
    redemptions = peewee.IntegerField(default=0)
    description = peewee.CharField(max_length=200, default="")
    created_by = peewee.CharField(max_length=40)
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)
    #: Outbound mail of every inbox made under this key waits for a human (postern.core.approval).
    require_approval = peewee.BooleanField(default=False)


class Agent(BaseModel):
    """An agent: one handle under one enrollment key, stable across redemptions."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("agt"))
    customer = peewee.ForeignKeyField(Customer, backref="agents", on_delete="CASCADE")
    enrollment = peewee.ForeignKeyField(EnrollmentKey, backref="agents", on_delete="CASCADE")
    handle = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("enrollment", "handle"), True),)


class AgentKey(BaseModel):
    """A short-lived agent key (``pk_agent_…``) minted by one redemption."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("key"))
    customer = peewee.ForeignKeyField(Customer, backref="agent_keys", on_delete="CASCADE")
    enrollment = peewee.ForeignKeyField(EnrollmentKey, backref="agent_keys", on_delete="CASCADE")
    agent = peewee.ForeignKeyField(Agent, backref="keys", on_delete="CASCADE")
    key_hash = peewee.CharField(max_length=64, unique=True)
    key_prefix = peewee.CharField(max_length=40)
    scopes = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)


class Inbox(BaseModel):
    """A mailbox address owned by a tenant, created under one enrollment key."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("inb"))
    customer = peewee.ForeignKeyField(Customer, backref="inboxes", on_delete="CASCADE")
    enrollment = peewee.ForeignKeyField(EnrollmentKey, backref="inboxes", on_delete="CASCADE")
    agent = peewee.ForeignKeyField(Agent, backref="inboxes", on_delete="CASCADE")
    address = peewee.CharField(max_length=320, unique=True)
    username = peewee.CharField(max_length=64)
    domain = peewee.CharField(max_length=253)
    display_name = peewee.CharField(max_length=200, default="")
    client_id = peewee.CharField(max_length=200, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    #: Sequence number of the newest message; a message's ``seq`` is this plus one,
    #: taken under the inbox row's lock, so seq order is commit order (the wait cursor).
    last_seq = peewee.BigIntegerField(default=0)
    #: Its outbound mail waits for a human (so does its enrollment key's, if that asks).
    require_approval = peewee.BooleanField(default=False)

    class Meta:
        indexes = ((("enrollment", "client_id"), True), (("enrollment", "created_at"), False))


class DeliveryCursor(BaseModel):
    """What waits without a cursor have handed one agent from one inbox: the ``seq`` of
    the last message given. Moved only by compare-and-swap (postern.core.mail.cursors)."""

    agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE", index=False)  # the key's first column
    inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
    delivered_seq = peewee.BigIntegerField(default=0)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("agent", "inbox")


class Thread(BaseModel):
    """A conversation inside one inbox, found through In-Reply-To/References."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("thr"))
    customer = peewee.ForeignKeyField(Customer, backref="threads", on_delete="CASCADE")
    inbox = peewee.ForeignKeyField(Inbox, backref="threads", on_delete="CASCADE")
    subject = peewee.CharField(max_length=998, default="")
    normalized_subject = peewee.CharField(max_length=998, default="", index=True)
    message_count = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    last_message_at = peewee.DateTimeField(default=utcnow)


class Message(BaseModel):
    """One message in one inbox, inbound or outbound, with its parsed parts and raw bytes."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("msg"))
    customer = peewee.ForeignKeyField(Customer, backref="messages", on_delete="CASCADE")
    inbox = peewee.ForeignKeyField(Inbox, backref="messages", on_delete="CASCADE")
    thread = peewee.ForeignKeyField(Thread, backref="messages", on_delete="CASCADE")
    seq = peewee.BigIntegerField()
    direction = peewee.CharField(max_length=10)  # inbound, outbound
    # received, queued, sending, sent, captured, failed; pending_approval, rejected, expired
    status = peewee.CharField(max_length=20)
    message_id_header = peewee.CharField(max_length=998, index=True)
    #: Outbound only, under human approval (postern.core.approval): the reviewer's note,
    #: who decided (token id) and when, and when a message still pending expires (set
    #: only while pending, so its index holds just the mail waiting for a reviewer).
    review_note = peewee.TextField(null=True)
    reviewed_by = peewee.CharField(max_length=40, null=True)
    reviewed_at = peewee.DateTimeField(null=True)
    approval_expires_at = peewee.DateTimeField(null=True, index=True)
    in_reply_to = peewee.CharField(max_length=998, null=True)
    references = peewee.TextField(default="")
    subject = peewee.CharField(max_length=998, default="")
    from_address = peewee.CharField(max_length=320, default="")
    from_name = peewee.CharField(max_length=200, default="")
    to_addresses = peewee.TextField(default="[]")  # JSON list of {"address", "name"}
    cc_addresses = peewee.TextField(default="[]")
    reply_to = peewee.TextField(default="[]")
    envelope_from = peewee.CharField(max_length=320, default="")
    sent_at = peewee.DateTimeField(null=True)  # the Date header
    received_at = peewee.DateTimeField(default=utcnow)
    text = peewee.TextField(default="")
    html = peewee.TextField(default="")
    #: The first 200 characters of the text, whitespace collapsed: listings never load bodies.
    snippet = peewee.CharField(max_length=200, default="")
    headers = peewee.TextField(default="[]")  # JSON list of [name, value]
    size = peewee.IntegerField()
    raw = peewee.BlobField()
    backend = peewee.CharField(max_length=40, null=True)
    backend_message_id = peewee.CharField(max_length=200, null=True)
    error = peewee.TextField(null=True)
    #: Outbound only: every envelope recipient (To, Cc and Bcc), and the retry state.
    envelope_to = peewee.TextField(default="[]")
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(null=True, index=True)
    #: Outbound only: recipients served by this Postern already have their copy.
    local_done = peewee.BooleanField(default=False)
    #: Outbound only: when a confirming send backend accepted it (status ``sending``).
    accepted_at = peewee.DateTimeField(null=True)
    #: Inbound only: one-time codes and verification links found at ingest, as JSON
    #: (``postern.core.mail.extract.Extraction``); '' when none were found.
    extraction = peewee.TextField(default="")
    #: Inbound only: the SMTP session's TLS version and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384");
    #: None when the message came in plaintext (or not over Postern's listener).
    tls = peewee.CharField(max_length=200, null=True)
    #: Inbound only: SPF, DKIM, DMARC and ARC verdicts at receive, as JSON
    #: (``postern.core.mail.verdicts.Verdict``); '' when not checked.
    authentication = peewee.TextField(default="")
    #: Outbound only: while a delivery attempt owns the message (its lease); None between
    #: attempts, so queue tooling never retries or cancels a message under way.
    claimed_until = peewee.DateTimeField(null=True)
    #: Outbound only: bulk mail (marked so, or to many recipients): one copy per outside
    #: recipient, each with its own one-click List-Unsubscribe link.
    bulk = peewee.BooleanField(default=False)

    class Meta:
        indexes = ((("inbox", "seq"), True), (("thread", "seq"), False))


class MessageRecipient(BaseModel):
    """One envelope recipient of an outbound message and where it stands: ``queued``,
    ``deferred`` (a temporary failure; retried), ``sent``, ``captured``, ``bounced``
    (refused for good, or a bounce report came back), ``complained`` (a feedback report),
    ``suppressed`` (on the customer's suppression list: never sent), ``failed`` (given up
    without an answer from the recipient's side), ``cancelled``."""

    message = peewee.ForeignKeyField(Message, backref="recipient_rows", on_delete="CASCADE", index=False)
    address = peewee.CharField(max_length=320)
    status = peewee.CharField(max_length=20)
    #: The reply or status that decided it ("550 5.1.1", "null_mx", "recipient_suppressed").
    code = peewee.CharField(max_length=60, default="")
    detail = peewee.CharField(max_length=1000, default="")
    attempts = peewee.IntegerField(default=0)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("message", "address")


class InboundPolicy(BaseModel):
    """What a customer (``inbox`` None) or one inbox does with mail that fails its
    sender's checks (postern.core.mail.policy); a null action inherits the level above
    (inbox, then customer, then ``[trust]``)."""

    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the key's first column
    #: '' for the customer-wide row: a primary key cannot hold NULL on PostgreSQL.
    scope = peewee.CharField(max_length=40, default="")
    dmarc_reject = peewee.CharField(max_length=20, null=True)  # refuse | quarantine | deliver
    unauthenticated = peewee.CharField(max_length=20, null=True)  # refuse | quarantine | deliver
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("customer", "scope")


class RetentionPolicy(BaseModel):
    """How long a customer's (``scope`` '') or one inbox's (``scope`` its id) mail is kept
    (postern.core.mail.retention). ``days`` None keeps it forever; an inbox's own row,
    even with None, wins over its customer's; no row inherits (docs/retention.md)."""

    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the key's first column
    #: '' for the customer-wide row, as in ``InboundPolicy``.
    scope = peewee.CharField(max_length=40, default="")
    days = peewee.IntegerField(null=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("customer", "scope")


class MailRule(BaseModel):
    """An allow or block entry (postern.core.mail.rules): for ``receive``, matched on the
    sender's authenticated identity; for ``send``, on each recipient. Set for the whole
    customer (``enrollment`` and ``inbox`` None), one enrollment key, or one inbox."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("rul"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    enrollment = peewee.ForeignKeyField(EnrollmentKey, null=True, on_delete="CASCADE")
    inbox = peewee.ForeignKeyField(Inbox, null=True, on_delete="CASCADE")
    direction = peewee.CharField(max_length=10)  # receive | send
    action = peewee.CharField(max_length=10)  # allow | block
    #: An address (``a@example.org``) or a domain, which covers its subdomains too.
    pattern = peewee.CharField(max_length=320)
    description = peewee.CharField(max_length=200, default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("customer", "direction"), False),)


class QuarantinedMessage(BaseModel):
    """Inbound mail held back by its inbox's policy: kept as received (with Postern's
    Authentication-Results), seen by humans only, never by an agent's waits or lists,
    until a human releases it into the inbox (postern.core.quarantine)."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("qua"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
    reason = peewee.CharField(max_length=40)  # dmarc_reject | unauthenticated | blocked | not_allowed
    #: The id the copy is stored under when released, given out now (in the 250), so a
    #: held copy's reply looks like a stored one's.
    message_id = peewee.CharField(max_length=40, default=lambda: new_id("msg"))
    envelope_from = peewee.CharField(max_length=320, default="")
    from_address = peewee.CharField(max_length=320, default="")
    subject = peewee.CharField(max_length=998, default="")
    authentication = peewee.TextField(default="")
    tls = peewee.CharField(max_length=200, null=True)
    size = peewee.IntegerField()
    raw = peewee.BlobField()
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("customer", "created_at"), False),)


class CodeHandover(BaseModel):
    """A message whose code or link ``wait_for_code`` handed to one agent: claimed by
    inserting this row, so two racing calls never hand over the same message
    (postern.core.mail.codewait). Independent of the agent's delivery cursor."""

    agent = peewee.ForeignKeyField(Agent, on_delete="CASCADE", index=False)  # the key's first column
    message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
    handed_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("agent", "message")


class Attachment(BaseModel):
    """A MIME part with a filename or a Content-ID; its bytes, decoded."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("att"))
    message = peewee.ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = peewee.CharField(max_length=255)
    content_type = peewee.CharField(max_length=255)
    content_id = peewee.CharField(max_length=998, null=True)
    inline = peewee.BooleanField(default=False)
    size = peewee.IntegerField()
    sha256 = peewee.CharField(max_length=64)
    data = peewee.BlobField()


class IdempotencyRecord(BaseModel):
    """``Idempotency-Key`` of a send: a retry with the same key returns the first result."""

    inbox = peewee.ForeignKeyField(Inbox, on_delete="CASCADE")
    key = peewee.CharField(max_length=200)
    request_hash = peewee.CharField(max_length=64)
    message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("inbox", "key")


class ServerSecret(BaseModel):
    """Random secrets shared by every process and host (e.g. the download-link key)."""

    name = peewee.CharField(primary_key=True, max_length=40)
    value = peewee.CharField(max_length=128)


class DownloadLink(BaseModel):
    """A signed, short-lived, single-use link to a raw message or an attachment."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("dl"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    kind = peewee.CharField(max_length=10)  # raw, attachment
    object_id = peewee.CharField(max_length=40, index=True)  # deleting a message finds its links
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)


class DkimKey(BaseModel):
    """A tenant domain's DKIM key pair. The private key is sealed (AES-GCM) with a key
    that never lives in the database: see ``postern.core.dkim``."""

    domain = peewee.CharField(primary_key=True, max_length=253)
    customer = peewee.ForeignKeyField(Customer, backref="dkim_keys", on_delete="CASCADE")
    selector = peewee.CharField(max_length=63)
    #: base64 of the DER SubjectPublicKeyInfo: the ``p=`` of the DKIM record.
    public_key = peewee.TextField()
    private_key_sealed = peewee.TextField()
    created_at = peewee.DateTimeField(default=utcnow)


class DomainCheck(BaseModel):
    """The last ``POST /v1/domains/{domain}/verify`` of a domain: status and each check."""

    domain = peewee.CharField(primary_key=True, max_length=253)
    customer = peewee.ForeignKeyField(Customer, backref="domain_checks", on_delete="CASCADE")
    status = peewee.CharField(max_length=20)  # verified, failed
    checks = peewee.TextField()  # JSON list of {"name", "type", "expected", "found", "ok"}
    checked_at = peewee.DateTimeField(default=utcnow)


class AuditEvent(BaseModel):
    """One audited action or denied attempt. Ids are plain strings: the log outlives rows."""

    id = peewee.BigAutoField()
    at = peewee.DateTimeField(default=utcnow, index=True)
    customer_id = peewee.CharField(max_length=40, null=True, index=True)
    enrollment_id = peewee.CharField(max_length=40, null=True)
    agent_id = peewee.CharField(max_length=40, null=True)
    token_id = peewee.CharField(max_length=40, null=True)
    key_prefix = peewee.CharField(max_length=40, null=True)
    actor = peewee.CharField(max_length=20)  # admin, agent, enrollment, cli, anonymous
    action = peewee.CharField(max_length=60)
    target = peewee.CharField(max_length=100, null=True)
    outcome = peewee.CharField(max_length=10)  # ok, denied, error
    code = peewee.CharField(max_length=60, null=True)
    request_id = peewee.CharField(max_length=40, null=True)
    client_addr = peewee.CharField(max_length=64, null=True)


class Webhook(BaseModel):
    """An endpoint that receives signed event deliveries for one enrollment's inboxes."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("whk"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    enrollment = peewee.ForeignKeyField(EnrollmentKey, on_delete="CASCADE")
    agent_id = peewee.CharField(max_length=40)  # who created it
    url = peewee.TextField()
    event_types = peewee.TextField()  # JSON list
    inbox_ids = peewee.TextField(default="[]")  # JSON list; empty: every inbox of the enrollment
    description = peewee.CharField(max_length=200, default="")
    enabled = peewee.BooleanField(default=True)
    disabled_reason = peewee.CharField(max_length=500, null=True)
    #: Signing secrets, encrypted with a server secret (postern.core.webhooks.secrets).
    secret = peewee.TextField()
    previous_secret = peewee.TextField(null=True)
    previous_secret_expires_at = peewee.DateTimeField(null=True)
    #: Deliveries in a row that failed every attempt; reset by any success.
    failed_deliveries = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("enrollment", "created_at"), False),)


class WebhookDelivery(BaseModel):
    """One event for one webhook: the exact body, and its attempts so far."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("dlv"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    webhook = peewee.ForeignKeyField(Webhook, backref="deliveries", on_delete="CASCADE")
    event_id = peewee.CharField(max_length=40)  # the webhook-id header, the same on every attempt
    event_type = peewee.CharField(max_length=40)
    payload = peewee.TextField()
    status = peewee.CharField(max_length=10)  # pending, succeeded, failed
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(null=True)
    #: Token of the dispatcher attempt in flight; its result is recorded only under it.
    lease = peewee.CharField(max_length=40, null=True)
    last_attempt_at = peewee.DateTimeField(null=True)
    last_status_code = peewee.IntegerField(null=True)
    last_error = peewee.TextField(null=True)
    last_response = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    delivered_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "next_attempt_at"), False), (("webhook", "created_at"), False))


class ConsoleSession(BaseModel):
    """A signed-in console user: the admin token it acts as, and its two clocks.
    Only the hash of the cookie's secret is stored, as for keys."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("cs"))
    secret_hash = peewee.CharField(max_length=64, unique=True)
    admin_token = peewee.ForeignKeyField(AdminToken, backref="console_sessions", on_delete="CASCADE")
    csrf_token = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    last_seen_at = peewee.DateTimeField(default=utcnow)
    #: The absolute end; idle expiry is counted from ``last_seen_at``.
    expires_at = peewee.DateTimeField()
    ended_at = peewee.DateTimeField(null=True)
    client_addr = peewee.CharField(max_length=64, null=True)


class ConsoleLink(BaseModel):
    """A one-time login link printed by ``postern admin console-link``."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("cl"))
    code_hash = peewee.CharField(max_length=64, unique=True)
    admin_token = peewee.ForeignKeyField(AdminToken, backref="console_links", on_delete="CASCADE")
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)


class ConsoleLoginFailure(BaseModel):
    """Failed console sign-ins per client address and window: the throttle is exact
    across workers and hosts because it lives in the database."""

    client = peewee.CharField(max_length=64)
    window_start = peewee.DateTimeField()
    failures = peewee.IntegerField(default=0)

    class Meta:
        primary_key = peewee.CompositeKey("client", "window_start")


class UsageEvent(BaseModel):
    """One metered action (docs/usage.md), written in the action's own transaction.
    ``ref`` names the action ("message.send:msg_…") and is unique, so an action that is
    retried or replayed is counted once. Enrollment and agent are ids, not foreign keys:
    the ledger outlives what it counted, except its customer."""

    id = peewee.BigAutoField()
    ref = peewee.CharField(max_length=100, unique=True)
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the index's first column
    enrollment_id = peewee.CharField(max_length=40)
    agent_id = peewee.CharField(max_length=40)
    kind = peewee.CharField(max_length=20)  # inbox.create, message.send, message.received
    at = peewee.DateTimeField(default=utcnow)
    quantity = peewee.IntegerField(default=1)  # a send's recipients; 1 otherwise
    bytes = peewee.BigIntegerField(default=0)

    class Meta:
        indexes = ((("customer", "at"), False),)


class UsageCalls(BaseModel):
    """API calls per hour, customer, enrollment, agent and route class: one row per
    bucket, added to with an UPSERT. An absent enrollment or agent is ''."""

    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the key's first column
    hour = peewee.DateTimeField()
    enrollment_id = peewee.CharField(max_length=40, default="")
    agent_id = peewee.CharField(max_length=40, default="")
    route_class = peewee.CharField(max_length=10)  # read, write, send, wait, enroll
    calls = peewee.BigIntegerField(default=0)

    class Meta:
        primary_key = peewee.CompositeKey("customer", "hour", "enrollment_id", "agent_id", "route_class")


class SendingStop(BaseModel):
    """The operator's kill switch: while this row stands, the customer, enrollment key or
    agent it names sends nothing and its queued mail is held (core/sendingstops.py)."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("stp"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    kind = peewee.CharField(max_length=20)  # customer, enrollment, agent
    subject_id = peewee.CharField(max_length=40)
    reason = peewee.CharField(max_length=500, default="")
    created_at = peewee.DateTimeField(default=utcnow)
    created_by = peewee.CharField(max_length=40)  # the admin token's id, or "cli"

    class Meta:
        indexes = ((("subject_id", "kind"), True),)


class KnownRecipient(BaseModel):
    """An address (by SHA-256) a customer has sent to: a fresh domain's ramp limits only
    recipients it never sent to before (postern/core/ratelimits/sending.py)."""

    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the key's first column
    address_hash = peewee.CharField(max_length=64)
    first_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        primary_key = peewee.CompositeKey("customer", "address_hash")


class Suppression(BaseModel):
    """An address a customer must not mail again: a hard bounce, a complaint, an
    unsubscribe or an admin's entry (postern/core/suppression.py)."""

    id = peewee.CharField(primary_key=True, max_length=40, default=lambda: new_id("sup"))
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE", index=False)  # the unique key's first column
    address = peewee.CharField(max_length=320)  # lower-cased
    reason = peewee.CharField(max_length=20)  # bounce, complaint, unsubscribe, manual
    detail = peewee.CharField(max_length=500, default="")
    message_id = peewee.CharField(max_length=40, null=True)  # the message that caused it
    created_at = peewee.DateTimeField(default=utcnow)
    created_by = peewee.CharField(max_length=40)  # a principal's id, or "system"

    class Meta:
        indexes = ((("customer", "address"), True),)


class UnsubscribeToken(BaseModel):
    """An RFC 8058 one-click unsubscribe link, by the SHA-256 of its token only."""

    token_hash = peewee.CharField(primary_key=True, max_length=64)
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    address = peewee.CharField(max_length=320)
    message_id = peewee.CharField(max_length=40, null=True)
    created_at = peewee.DateTimeField(default=utcnow)


#: Every model, for the schema check that keeps migrations and models in step.
ALL_MODELS = (
    Customer,
    ServiceState,
    AdminToken,
    EnrollmentKey,
    Agent,
    AgentKey,
    Inbox,
    DeliveryCursor,
    AuditEvent,
    Thread,
    Message,
    MessageRecipient,
    InboundPolicy,
    RetentionPolicy,
    MailRule,
    QuarantinedMessage,
    CodeHandover,
    Attachment,
    IdempotencyRecord,
    ServerSecret,
    DownloadLink,
    DkimKey,
    DomainCheck,
    Webhook,
    WebhookDelivery,
    ConsoleSession,
    ConsoleLink,
    ConsoleLoginFailure,
    UsageEvent,
    UsageCalls,
    SendingStop,
    KnownRecipient,
    Suppression,
    UnsubscribeToken,
)
