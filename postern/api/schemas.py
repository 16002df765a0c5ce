"""JSON schemas of the API's objects, for the OpenAPI document."""

from __future__ import annotations

from postern.core.ratelimits.policy import ROUTE_CLASSES

S = {"type": "string"}
S_NULL = {"type": ["string", "null"]}
INT = {"type": "integer"}
INT_NULL = {"type": ["integer", "null"]}
STRS = {"type": "array", "items": S}


def obj(props: dict, required=None) -> dict:
    return {"type": "object", "required": list(required or props), "properties": props}


CUSTOMER = obj({"id": S, "label": S, "name": S, "created_at": S, "suspended_at": S_NULL})
ENROLLMENT_KEY_FIELDS = {
    "id": S,
    "customer_id": S,
    "key_prefix": S,
    "scopes": STRS,
    "allowed_domains": STRS,
    "max_mailboxes": INT,
    "mailboxes_used": INT,
    "max_redemptions": INT_NULL,
    "redemptions": INT,
    "description": S,
    "created_at": S,
    "expires_at": S,
    "revoked_at": S_NULL,
    "require_approval": {"type": "boolean", "description": "outbound mail of its inboxes waits for a human"},
}
AGENT_KEY = obj(
    {
        "id": S,
        "agent_id": S,
        "enrollment_id": S,
        "key_prefix": S,
        "scopes": STRS,
        "created_at": S,
        "expires_at": S,
        "revoked_at": S_NULL,
    }
)
AGENT = obj(
    {
        "id": S,
        "customer_id": S,
        "enrollment_id": S,
        "handle": S,
        "created_at": S,
        "keys": {"type": "array", "items": AGENT_KEY},
    },
    required=["id", "customer_id", "enrollment_id", "handle", "created_at"],
)
ENROLLMENT = obj(
    {
        "agent_id": S,
        "agent_handle": S,
        "agent_key": S,
        "agent_key_prefix": S,
        "scopes": STRS,
        "mailboxes_used": INT,
        "mailboxes_max": INT,
        "expires_at": S,
        "renewed": {"type": "boolean"},
    }
)
ME = obj(
    {
        "agent_id": S,
        "agent_handle": S,
        "customer_id": S,
        "enrollment_id": S,
        "key_prefix": S,
        "scopes": STRS,
        "domains": STRS,
        "mailboxes_used": INT,
        "mailboxes_max": INT,
        "expires_at": S,
    }
)
INBOX = obj(
    {
        "id": S,
        "address": S,
        "username": S,
        "domain": S,
        "display_name": S,
        "client_id": S_NULL,
        "agent_id": S,
        "created_at": S,
        "require_approval": {
            "type": "boolean",
            "description": "its outbound mail waits for a human (its enrollment key may ask this too)",
        },
        "cursor": {
            "type": "string",
            "description": "only when creating: this agent's delivery cursor on the inbox (docs/mail.md)",
        },
    },
    required=["id", "address", "username", "domain", "display_name", "client_id", "agent_id", "created_at"],
)
AUDIT_EVENT = obj(
    {
        "id": INT,
        "at": S,
        "customer_id": S_NULL,
        "enrollment_id": S_NULL,
        "agent_id": S_NULL,
        "token_id": S_NULL,
        "key_prefix": S_NULL,
        "actor": S,
        "action": S,
        "target": S_NULL,
        "outcome": S,
        "code": S_NULL,
        "request_id": S_NULL,
        "client_addr": S_NULL,
    }
)

SCHEMAS = {
    "Customer": CUSTOMER,
    "EnrollmentKey": obj(ENROLLMENT_KEY_FIELDS),
    "EnrollmentKeyCreated": obj({**ENROLLMENT_KEY_FIELDS, "enrollment_key": S}),
    "EnrollmentKeyRevoked": obj({**ENROLLMENT_KEY_FIELDS, "agent_keys_revoked": INT}),
    "AgentKey": AGENT_KEY,
    "Agent": AGENT,
    "Enrollment": ENROLLMENT,
    "Me": ME,
    "Inbox": INBOX,
    "AuditEvent": AUDIT_EVENT,
}

PERSON = obj({"address": S, "name": S})
PEOPLE = {"type": "array", "items": PERSON}
ATTACHMENT = obj(
    {
        "id": S,
        "filename": S,
        "content_type": S,
        "size": INT,
        "sha256": S,
        "content_id": S_NULL,
        "inline": {"type": "boolean"},
    }
)
CODE = obj({"value": S, "as_written": S, "evidence": S})
LINK = obj(
    {"url": S, "kind": {"enum": ["verify", "magic", "reset"]}, "evidence": S, "sender_domain": {"type": "boolean"}}
)
RESULT = {"enum": ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"]}
AUTHENTICATION = obj(
    {
        "spf": RESULT,
        "dkim": {"type": "array", "items": obj({"domain": S, "selector": S, "result": RESULT})},
        "dmarc": RESULT,
        "dmarc_policy": {"enum": ["", "none", "quarantine", "reject"]},
        "arc": RESULT,
        "from_domain": S,
        "aligned": {"type": "boolean"},
        "verified_sender": {"type": "boolean"},
        "skipped": S,
    }
)
AUTHENTICATION_OR_NULL = {
    "anyOf": [AUTHENTICATION, {"type": "null"}],
    "description": "sender verdicts at receive (docs/trust.md); null for outbound or unchecked mail",
}
MESSAGE_SUMMARY_FIELDS = {
    "id": S,
    "inbox_id": S,
    "thread_id": S,
    "cursor": S,
    "direction": {"enum": ["inbound", "outbound"]},
    "status": S,
    "left_server": {"type": "boolean"},
    "status_reason": S_NULL,
    "message_id": S,
    "subject": S,
    "from": PERSON,
    "to": PEOPLE,
    "cc": PEOPLE,
    "snippet": S,
    "codes": {"type": "array", "items": CODE},
    "links": {"type": "array", "items": LINK},
    "verified_sender": {
        "type": "boolean",
        "description": "the From domain is proven (DMARC passed at receive); false for anything else",
    },
    "received_at": S,
    "sent_at": S_NULL,
    "size": INT,
    "attachment_count": INT,
    "review_note": {**S_NULL, "description": "the reviewer's note, for a message held for approval and decided"},
    "reviewed_at": S_NULL,
    "approval_expires_at": {**S_NULL, "description": "while status is pending_approval: when it expires unsent"},
}
MESSAGE_SUMMARY = obj(MESSAGE_SUMMARY_FIELDS)
MESSAGE = obj(
    {
        **MESSAGE_SUMMARY_FIELDS,
        "reply_to": PEOPLE,
        "in_reply_to": S_NULL,
        "references": STRS,
        "envelope_from": S,
        "tls": {
            "type": ["string", "null"],
            "description": 'TLS version and cipher of the SMTP session that brought it, e.g. "TLSv1.3 '
            'TLS_AES_256_GCM_SHA384"; null for plaintext or outbound mail',
        },
        "authentication": AUTHENTICATION_OR_NULL,
        "headers": {"type": "array", "items": {"type": "array", "items": S}},
        "text": S,
        "html": S,
        "truncated": {"type": "boolean"},
        "error": S_NULL,
        "attempts": INT,
        "attachments": {"type": "array", "items": ATTACHMENT},
    }
)
THREAD_FIELDS = {"id": S, "inbox_id": S, "subject": S, "message_count": INT, "created_at": S, "last_message_at": S}
SCHEMAS.update(
    {
        "MessageSummary": MESSAGE_SUMMARY,
        "Message": MESSAGE,
        "Attachment": ATTACHMENT,
        "Person": PERSON,
        "Code": CODE,
        "Authentication": AUTHENTICATION,
        "Link": LINK,
        "DownloadLink": obj({"url": S, "expires_at": S}),
        "OutboundAttachment": obj(
            {
                "filename": S,
                "content_type": S,
                "content": {"type": "string", "contentEncoding": "base64"},
                "content_id": S,
                "inline": {"type": "boolean"},
            },
            required=["content"],
        ),
        "WaitResult": obj(
            {"messages": {"type": "array", "items": MESSAGE_SUMMARY}, "cursor": S, "timed_out": {"type": "boolean"}}
        ),
        "CodeResult": obj(
            {
                "message_id": {"type": ["string", "null"]},
                "inbox_id": S,
                "from": {"type": ["string", "null"], "description": "the sender's address"},
                "code": {"type": ["string", "null"], "description": "the best one-time code, as to type it"},
                "link": {"type": ["string", "null"], "description": "the best verification, sign-in or reset link"},
                "received_at": {"type": ["string", "null"], "format": "date-time"},
                "timed_out": {"type": "boolean"},
            }
        ),
        "Thread": obj(THREAD_FIELDS),
        "ThreadWithMessages": obj({**THREAD_FIELDS, "messages": {"type": "array", "items": MESSAGE_SUMMARY}}),
    }
)

DNS_RECORD = obj({"name": S, "type": S, "ttl": INT, "value": S})
DNS_RECORDS = {"type": "array", "items": DNS_RECORD}
SCHEMAS["Domain"] = obj(
    {
        "domain": S,
        "zone": S,
        "records": DNS_RECORDS,
        "delegations": {
            "type": "array",
            "items": obj({"zone": S, "parent": S, "served_by_postern": {"type": "boolean"}, "records": DNS_RECORDS}),
        },
        "status": {"type": "string", "enum": ["unverified", "verified", "failed"]},
        "checked_at": S_NULL,
        "checks": {
            "type": "array",
            "items": obj(
                {"name": S, "type": S, "expected": S, "found": STRS, "ok": {"type": "boolean"}, "error": S_NULL}
            ),
        },
    }
)

ACTION = {"enum": ["deliver", "quarantine", "refuse"]}
ACTION_OR_NULL = {"enum": ["deliver", "quarantine", "refuse", None], "description": "null: inherited"}
QUARANTINED_FIELDS = {
    "id": S,
    "customer_id": S,
    "inbox_id": S,
    "reason": {"enum": ["dmarc_reject", "unauthenticated", "blocked", "not_allowed"]},
    "envelope_from": S,
    "from": S,
    "subject": S,
    "size": INT,
    "tls": S_NULL,
    "authentication": AUTHENTICATION_OR_NULL,
    "created_at": S,
}
SCHEMAS["QuarantinedMessage"] = obj(QUARANTINED_FIELDS)
SCHEMAS["QuarantinedMessageDetail"] = obj(
    {**QUARANTINED_FIELDS, "text": S, "headers": {"type": "array", "items": {"type": "array", "items": S}}}
)
SCHEMAS["InboundPolicy"] = obj(
    {
        "customer_id": S,
        "inbox_id": S_NULL,
        "dmarc_reject": ACTION_OR_NULL,
        "unauthenticated": ACTION_OR_NULL,
        "effective": obj({"dmarc_reject": ACTION, "unauthenticated": ACTION}),
    }
)
DAYS_OR_NULL = {"type": ["integer", "null"], "minimum": 1, "maximum": 36500}
SCHEMAS["Retention"] = obj(
    {
        "customer_id": S,
        "inbox_id": S_NULL,
        "set": {"type": "boolean", "description": "whether this level has a setting of its own"},
        "days": {**DAYS_OR_NULL, "description": "this level's own setting; null: forever, or not set"},
        "effective_days": {**DAYS_OR_NULL, "description": "what applies after inheritance; null: kept forever"},
    }
)
MAIL_RULE = obj(
    {
        "id": S,
        "customer_id": S,
        "level": {"enum": ["customer", "enrollment", "inbox"]},
        "enrollment_id": S_NULL,
        "inbox_id": S_NULL,
        "direction": {"enum": ["receive", "send"]},
        "action": {"enum": ["allow", "block"]},
        "pattern": {"type": "string", "description": "an address, or a domain (its subdomains too)"},
        "description": S,
        "created_at": S,
    }
)
SCHEMAS["MailRule"] = MAIL_RULE
SCHEMAS["MailRules"] = obj({"data": {"type": "array", "items": MAIL_RULE}})
SENDING_STOP = obj(
    {
        "id": S,
        "customer_id": S,
        "kind": {"enum": ["customer", "enrollment", "agent"]},
        "subject_id": S,
        "reason": S,
        "created_at": {"type": "string", "format": "date-time"},
        "created_by": S,
    }
)
SCHEMAS["SendingStop"] = SENDING_STOP
PENDING_MESSAGE = {
    **MESSAGE,
    "required": [*MESSAGE["required"], "customer_id", "envelope_to"],
    "properties": {
        **MESSAGE["properties"],
        "customer_id": S,
        "envelope_to": {**STRS, "description": "every recipient the mail goes to, Bcc included"},
    },
}
SCHEMAS["PendingMessage"] = PENDING_MESSAGE
SCHEMAS["PendingMessageList"] = obj({"data": {"type": "array", "items": PENDING_MESSAGE}})
SCHEMAS["SendingStopList"] = obj({"data": {"type": "array", "items": SENDING_STOP}})
COUNT = {"type": "integer", "minimum": 0}
SCHEMAS["Usage"] = obj(
    {
        "customer_id": S,
        "enrollment_id": {**S_NULL, "description": "the enrollment counted (an agent key's own); null: the customer"},
        "since": {**S, "description": "start of the period (inclusive), UTC"},
        "until": {**S, "description": "end of the period (exclusive), UTC"},
        "inboxes_created": COUNT,
        "messages_sent": {**COUNT, "description": "sends accepted, however their delivery ended"},
        "recipients": {**COUNT, "description": "recipients of those sends (to, cc and bcc)"},
        "bytes_sent": COUNT,
        "messages_received": {**COUNT, "description": "copies stored into inboxes (one per inbox)"},
        "bytes_received": COUNT,
        "bytes_stored": {**COUNT, "description": "the size of all mail kept now, whatever the period"},
        "api_calls": obj({name: COUNT for name in ROUTE_CLASSES}),
    }
)
