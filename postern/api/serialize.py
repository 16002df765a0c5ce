"""Model rows as the API's JSON objects: one function per object type."""

from __future__ import annotations

import datetime as dt

from postern.core.enrollment import allowed_domains


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def customer_json(c) -> dict:
    return {"id": c.id, "label": c.label, "name": c.name, "created_at": iso(c.created_at)}


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
