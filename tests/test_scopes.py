"""Scopes are checked in one place (``CoreCaller.as_agent(..., scope=)``), so every agent
route refuses a key that lacks its scope with the same error body and audit row, and
lets in a key that holds only that scope.

The routes come from the app's route table and each resource's OpenAPI declaration
(plugins' routes included): a new agent route that declares no scope fails here, and so
does one whose declared scope is not the one enforced."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from support.routes import served_operations
from support.world import first_delivery, first_message, make_tenant, seed_inbox, seed_webhook

from postern.api.calls import CoreCaller
from postern.core.db import DatabaseRunner
from postern.core.models import AuditEvent
from postern.core.principal import SCOPES

AGENT_OPS = [op for op in served_operations() if op.auth == "agent"]
SCOPED_OPS = [op for op in AGENT_OPS if op.scope is not None]
# Routes any agent key may call whatever its scopes: say why when adding one.
UNSCOPED = {
    "GET /v1/me",  # a key may always ask what it is, to learn which scopes it lacks
    "GET /v1/usage",  # and what its enrollment used, as /v1/me tells its quota: counts, no mail
}

# A valid body for each agent operation that reads one, so the scope is all that differs.
BODIES = {
    "POST /v1/inboxes": {},
    "POST /v1/inboxes/{inbox_id}/messages": {"to": ["someone@example.org"], "subject": "s", "text": "t"},
    "POST /v1/inboxes/{inbox_id}/messages/{message_id}/reply": {"text": "thanks"},
    "POST /v1/webhooks": {"url": "https://hooks.example.org/in", "event_types": ["message.received"]},
    "PATCH /v1/webhooks/{webhook_id}": {"description": "changed"},
}
QUERIES = {"GET /v1/inboxes/{inbox_id}/messages/wait": {"timeout": "0"}}


def test_every_agent_route_declares_a_scope():
    assert AGENT_OPS, "no agent routes found in the route table"
    unscoped = {str(op) for op in AGENT_OPS if op.scope is None}
    assert unscoped == UNSCOPED, "an agent route without x-postern-scope: pass scope= to as_agent and declare it"
    assert {op.scope for op in SCOPED_OPS} <= set(SCOPES)


def test_as_agent_has_no_default_scope(postern):
    runner = DatabaseRunner(1)
    try:
        caller = CoreCaller(postern, runner)
        req = SimpleNamespace(context=SimpleNamespace(), method="GET", path="/", remote_addr="127.0.0.1")
        with pytest.raises(TypeError, match="scope"):
            asyncio.run(caller.as_agent(req, lambda principal, info: None))
    finally:
        runner.shutdown()


def _call(client, postern, tenant, op, scopes):
    enrolled = tenant.agent_key(scopes=scopes, handle=f"bot{len(tenant.enrollment_keys)}")
    webhook, inbox = seed_webhook(postern, enrolled), seed_inbox(postern, enrolled)
    message = first_message(inbox)
    ids = {
        "inbox_id": inbox.id,
        "message_id": message.id,
        "thread_id": message.thread_id,
        "attachment_id": message.attachments[0].id,
        "domain": tenant.domain,
        "webhook_id": webhook.id,
        "delivery_id": first_delivery(webhook).id,
    }
    missing = set(op.params) - set(ids)
    assert not missing, f"{op}: map the path parameters {missing} to a seeded object here"
    body = BODIES.get(str(op), {}) if op.method in ("POST", "PUT", "PATCH") else None
    headers = {"Authorization": f"Bearer {enrolled.agent_key}"}
    resp = client.simulate_request(op.method, op.url(ids), headers=headers, json=body, params=QUERIES.get(str(op)))
    return resp, ids


@pytest.mark.parametrize("op", SCOPED_OPS, ids=str)
def test_a_key_without_the_scope_is_refused_alike(client, postern, op):
    tenant = make_tenant("acme")
    resp, ids = _call(client, postern, tenant, op, [s for s in SCOPES if s != op.scope])
    assert resp.status_code == 403, resp.text
    assert resp.json == {
        "error": {
            "type": "permission_error",
            "code": "insufficient_scope",
            "message": f"this key lacks the scope '{op.scope}'",
            "request_id": resp.headers["x-request-id"],
        }
    }
    [row] = AuditEvent.select().where(AuditEvent.outcome == "denied")
    assert (row.code, row.actor, row.request_id) == ("insufficient_scope", "agent", resp.headers["x-request-id"])
    first_param = op.params[0] if op.params else None
    assert row.target == ids.get(first_param)


@pytest.mark.parametrize("op", SCOPED_OPS, ids=str)
def test_a_key_with_only_the_scope_is_let_in(client, postern, op):
    tenant = make_tenant("acme")
    resp, _ = _call(client, postern, tenant, op, [op.scope])
    assert 200 <= resp.status_code < 300, resp.text
    assert AuditEvent.select().where(AuditEvent.outcome == "denied").count() == 0


def test_principals_with_the_same_scopes_share_one_set_and_others_get_their_own(db):
    """Parked waits keep their principals; the scope set is shared per stored scopes
    string (core/auth.py ``_scope_set``), never across different scopes."""
    from support.world import INFO

    from postern.core.auth import authenticate

    tenant = make_tenant("acme")
    full = [authenticate(tenant.agent_key(handle=f"b{n}").agent_key, "agent", INFO) for n in range(2)]
    reader = authenticate(tenant.agent_key(["mailbox:read"], handle="r").agent_key, "agent", INFO)
    assert full[0].scopes is full[1].scopes and full[0].scopes == frozenset(SCOPES)
    assert reader.scopes == frozenset({"mailbox:read"}) and reader.scopes is not full[0].scopes
