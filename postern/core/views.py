"""The JSON shape of each domain object: one function per object type.

The API, the webhook events, the CLI's ``--json`` output and plugins all build their
JSON here, so one object has one shape wherever it is shown. This module sits in the
core and imports nothing above it (tests/test_layering.py holds that).
"""

from __future__ import annotations

import datetime as dt
import json

import orjson

from postern.core.enrollment import allowed_domains
from postern.core.mail.mime import sanitize_filename
from postern.core.mail.outcome import outcome
from postern.core.models import utcnow


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def customer_json(c) -> dict:
    return {
        "id": c.id,
        "label": c.label,
        "name": c.name,
        "created_at": iso(c.created_at),
        "suspended_at": iso(c.suspended_at),
    }


def enrollment_key_json(k) -> dict:
    return {
        "id": k.id,
        "customer_id": k.customer_id,
        "key_prefix": k.key_prefix,
        "scopes": k.scopes.split(),
        "allowed_domains": allowed_domains(k),
        "max_mailboxes": k.max_mailboxes,
        "mailboxes_used": k.mailboxes_used,
        "max_redemptions": k.max_redemptions,
        "redemptions": k.redemptions,
        "description": k.description,
        "created_at": iso(k.created_at),
        "expires_at": iso(k.expires_at),
        "revoked_at": iso(k.revoked_at),
        "require_approval": k.require_approval,
    }


def agent_key_json(k) -> dict:
    return {
        "id": k.id,
        "agent_id": k.agent_id,
        "enrollment_id": k.enrollment_id,
        "key_prefix": k.key_prefix,
        "scopes": k.scopes.split(),
        "created_at": iso(k.created_at),
        "expires_at": iso(k.expires_at),
        "revoked_at": iso(k.revoked_at),
    }


def agent_json(a, keys=None) -> dict:
    body = {
        "id": a.id,
        "customer_id": a.customer_id,
        "enrollment_id": a.enrollment_id,
        "handle": a.handle,
        "created_at": iso(a.created_at),
    }
    if keys is not None:
        body["keys"] = [agent_key_json(k) for k in keys]
    return body


def admin_token_json(t) -> dict:
    return {
        "id": t.id,
        "customer_id": t.customer_id,
        "key_prefix": t.key_prefix,
        "description": t.description,
        "created_at": iso(t.created_at),
        "revoked_at": iso(t.revoked_at),
    }


def enrolled_json(result) -> dict:
    """What redeeming an enrollment key returns; the only time ``agent_key`` is shown."""
    return {
        "agent_id": result.agent.id,
        "agent_handle": result.agent.handle,
        "agent_key": result.agent_key,
        "agent_key_prefix": result.key.key_prefix,
        "scopes": result.key.scopes.split(),
        "mailboxes_used": result.enrollment.mailboxes_used,
        "mailboxes_max": result.enrollment.max_mailboxes,
        "expires_at": iso(result.key.expires_at),
        "renewed": result.renewed,
    }


def me_json(me) -> dict:
    """What an agent key is: agent, scopes, quota and expiry."""
    return {
        "agent_id": me.agent.id,
        "agent_handle": me.agent.handle,
        "customer_id": me.agent.customer_id,
        "enrollment_id": me.enrollment.id,
        "key_prefix": me.principal.key_prefix,
        "scopes": sorted(me.principal.scopes),
        "domains": allowed_domains(me.enrollment),
        "mailboxes_used": me.enrollment.mailboxes_used,
        "mailboxes_max": me.enrollment.max_mailboxes,
        "expires_at": iso(me.principal.expires_at),
    }


def inbox_json(i) -> dict:
    return {
        "id": i.id,
        "address": i.address,
        "username": i.username,
        "domain": i.domain,
        "display_name": i.display_name,
        "client_id": i.client_id,
        "agent_id": i.agent_id,
        "created_at": iso(i.created_at),
        # The inbox's own setting; its enrollment key may require approval too.
        "require_approval": i.require_approval,
    }


def audit_json(e) -> dict:
    return {
        "id": e.id,
        "at": iso(e.at),
        "customer_id": e.customer_id,
        "enrollment_id": e.enrollment_id,
        "agent_id": e.agent_id,
        "token_id": e.token_id,
        "key_prefix": e.key_prefix,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "code": e.code,
        "request_id": e.request_id,
        "client_addr": e.client_addr,
    }


def page_json(page, fn) -> dict:
    return {"data": [fn(item) for item in page.items], "next_page_token": page.next_page_token}


def _people(raw: str) -> list[dict]:
    return [] if raw == "[]" else orjson.loads(raw)  # most Cc lists are empty: skip the parser


def attachment_json(a) -> dict:
    return {
        "id": a.id,
        # Ingest stores the sanitised name; sanitising again (idempotent) covers rows
        # stored before a rule was added, e.g. bidi controls (the MCP server reads this).
        "filename": sanitize_filename(a.filename, 0, a.content_type),
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "content_id": a.content_id,
        "inline": a.inline,
    }


_NO_EXTRACTION = {"codes": [], "links": []}


def _extraction(m) -> dict:
    """The codes and links ingest found (postern/core/mail/extract.py); a listing that
    selected no ``extraction`` column, or an old row, shows none."""
    stored = getattr(m, "extraction", None)
    if not stored:
        return _NO_EXTRACTION
    found = orjson.loads(stored)
    return {"codes": found.get("codes", []), "links": found.get("links", [])}


def _authentication(m) -> dict | None:
    """The sender verdicts stored at receive (postern/core/mail/verdicts.py); None for
    outbound mail, mail stored before checking existed, or with ``[trust] verify`` off."""
    stored = getattr(m, "authentication", None)
    return orjson.loads(stored) if stored else None


def message_json(view, *, full: bool = False, max_length: int | None = None) -> dict:
    """A message summary; with ``full``, bodies, headers and attachments too.
    Mail is untrusted: ``html`` is returned as received, for the caller to sanitise."""
    m = view.message
    d = m.__data__  # by field name, as peewee's descriptors read it (absent: None), at a third of the cost
    result = outcome(m)
    body = {
        "id": d.get("id"),
        "inbox_id": d.get("inbox"),
        "thread_id": d.get("thread"),
        "cursor": str(d.get("seq")),
        "direction": d.get("direction"),
        "status": d.get("status"),
        "left_server": result.left_server,
        "status_reason": result.reason,
        "message_id": d.get("message_id_header"),
        "subject": d.get("subject"),
        # Mail without a From header still has an envelope sender: show who it came from.
        "from": {"address": d.get("from_address") or d.get("envelope_from"), "name": d.get("from_name")},
        "to": _people(d.get("to_addresses")),
        "cc": _people(d.get("cc_addresses")),
        "snippet": d.get("snippet"),
        **_extraction(m),
        "verified_sender": bool((_authentication(m) or {}).get("verified_sender")),
        "received_at": iso(d.get("received_at")),
        "sent_at": iso(d.get("sent_at")),
        "size": d.get("size"),
        "attachment_count": view.attachment_count,
        # Human approval (postern.core.approval): the reviewer's note to the agent, and
        # until when a held message waits.
        "review_note": d.get("review_note"),
        "reviewed_at": iso(d.get("reviewed_at")),
        "approval_expires_at": iso(d.get("approval_expires_at")) if d.get("status") == "pending_approval" else None,
    }
    if full:
        text, html = m.text, m.html
        truncated = max_length is not None and (len(text) > max_length or len(html) > max_length)
        if max_length is not None:
            text, html = text[:max_length], html[:max_length]
        body.update(
            {
                "reply_to": _people(m.reply_to),
                "in_reply_to": m.in_reply_to,
                "references": m.references.split(),
                "envelope_from": m.envelope_from,
                # How the SMTP session that brought it was encrypted; None for plaintext.
                "tls": m.tls,
                "authentication": _authentication(m),
                "headers": [[name, value] for name, value in json.loads(m.headers)],
                "text": text,
                "html": html,
                "truncated": truncated,
                "error": m.error,
                "attempts": m.attempts,
                "attachments": [attachment_json(a) for a in view.attachments],
            }
        )
        if view.recipients is not None:
            body["recipients"] = recipients_json(view.recipients)
    return body


def recipients_json(rows) -> list[dict]:
    """Where each recipient of an outbound message stands (docs/mail.md, "Recipients")."""
    return [
        {"address": r.address, "status": r.status, "code": r.code or None, "detail": r.detail or None} for r in rows
    ]


def pending_json(view) -> dict:
    """A message held for human approval as its reviewer sees it (postern.core.approval):
    the whole message, its customer, and every envelope recipient, Bcc included."""
    m = view.message
    return {**message_json(view, full=True), "customer_id": m.customer_id, "envelope_to": json.loads(m.envelope_to)}


def thread_json(t) -> dict:
    return {
        "id": t.id,
        "inbox_id": t.inbox_id,
        "subject": t.subject,
        "message_count": t.message_count,
        "created_at": iso(t.created_at),
        "last_message_at": iso(t.last_message_at),
    }


def webhook_json(hook, secret: str | None = None) -> dict:
    """A webhook; ``secret`` only in the answer that created or rotated it."""
    until = hook.previous_secret_expires_at
    rotating = until if hook.previous_secret and until and until > utcnow() else None
    body = {
        "id": hook.id,
        "url": hook.url,
        "event_types": json.loads(hook.event_types),
        "inbox_ids": json.loads(hook.inbox_ids),
        "description": hook.description,
        "enabled": hook.enabled,
        "disabled_reason": hook.disabled_reason,
        "secret_rotating_until": iso(rotating),
        "created_at": iso(hook.created_at),
        "updated_at": iso(hook.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_json(d) -> dict:
    return {
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "last_attempt_at": iso(d.last_attempt_at),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "last_response": d.last_response,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
    }


def dns_record_json(r) -> dict:
    return {"name": r.name, "type": r.rtype, "ttl": r.ttl, "value": r.value}


def domain_json(view) -> dict:
    """A domain as its tenant sees it. Only public data: DKIM private keys never leave the core."""
    return {
        "domain": view.domain,
        "zone": view.zone,
        "records": [dns_record_json(r) for r in view.records],
        "delegations": [
            {
                "zone": d.zone,
                "parent": d.parent,
                "served_by_postern": d.served_by_postern,
                "records": [dns_record_json(r) for r in d.records],
            }
            for d in view.delegations
        ],
        "status": view.status,
        "checked_at": iso(view.checked_at),
        "checks": [
            {
                "name": c.name,
                "type": c.rtype,
                "expected": c.expected,
                "found": list(c.found),
                "ok": c.ok,
                "error": c.error,
            }
            for c in view.checks
        ],
    }


def quarantined_json(q, parsed=None) -> dict:
    """Mail held back by an inbox's policy (postern.core.quarantine); with ``parsed`` (the
    detail view), its text and headers too, for the human deciding on it."""
    body = {
        "id": q.id,
        "customer_id": q.customer_id,
        "inbox_id": q.inbox_id,
        "reason": q.reason,
        "envelope_from": q.envelope_from,
        "from": q.from_address,
        "subject": q.subject,
        "size": q.size,
        "tls": q.tls,
        "authentication": _authentication(q),
        "created_at": iso(q.created_at),
    }
    if parsed is not None:
        from postern.core.mail.htmltext import html_to_text

        body["text"] = parsed.text if parsed.text.strip() else html_to_text(parsed.html)
        body["headers"] = [list(h) for h in parsed.headers]
    return body


def inbound_policy_json(view) -> dict:
    """One level of the inbound policy (postern.core.quarantine.PolicyView)."""
    return {
        "customer_id": view.customer_id,
        "inbox_id": view.inbox_id,
        "dmarc_reject": view.dmarc_reject,
        "unauthenticated": view.unauthenticated,
        "effective": {"dmarc_reject": view.effective.dmarc_reject, "unauthenticated": view.effective.unauthenticated},
    }


def retention_json(view) -> dict:
    """One level's message retention (postern.core.mail.retention.RetentionView)."""
    return {
        "customer_id": view.customer_id,
        "inbox_id": view.inbox_id,
        "set": view.set_here,
        "days": view.days,
        "effective_days": view.effective_days,
    }


def sending_stop_json(stop) -> dict:
    """One sending stop (postern.core.models.SendingStop)."""
    return {
        "id": stop.id,
        "customer_id": stop.customer_id,
        "kind": stop.kind,
        "subject_id": stop.subject_id,
        "reason": stop.reason,
        "created_at": iso(stop.created_at),
        "created_by": stop.created_by,
    }


def usage_json(u) -> dict:
    """A customer's or an enrollment's usage over a period (postern.core.usage.Usage)."""
    return {
        "customer_id": u.customer_id,
        "enrollment_id": u.enrollment_id,
        "since": iso(u.since),
        "until": iso(u.until),
        "inboxes_created": u.inboxes_created,
        "messages_sent": u.messages_sent,
        "recipients": u.recipients,
        "bytes_sent": u.bytes_sent,
        "messages_received": u.messages_received,
        "bytes_received": u.bytes_received,
        "bytes_stored": u.bytes_stored,
        "api_calls": dict(u.api_calls),
    }


def mail_rule_json(r) -> dict:
    """One allow or block entry (postern.core.mail.rules)."""
    level = "inbox" if r.inbox_id else "enrollment" if r.enrollment_id else "customer"
    return {
        "id": r.id,
        "customer_id": r.customer_id,
        "level": level,
        "enrollment_id": r.enrollment_id,
        "inbox_id": r.inbox_id,
        "direction": r.direction,
        "action": r.action,
        "pattern": r.pattern,
        "description": r.description,
        "created_at": iso(r.created_at),
    }
