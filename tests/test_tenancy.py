"""Tenancy and authorization, proven server-side through the HTTP API.

* scopes: every agent endpoint against every subset of the scopes, denials audited;
* isolation: every route with an id in its path, fed another tenant's id (or another
  enrollment's inbox), answers exactly like a missing id and changes nothing;
* key classes: missing, malformed, unknown, expired, revoked and wrong-class keys;
* bad input: refused with the field named, and nothing created or counted.

Routes are discovered from ``build_routes`` at collection time, so a new route is
swept automatically (and a new kind of id in a path fails until it is mapped here).
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from playhouse.shortcuts import model_to_dict
from support.routes import PATH_PARAM, Operation, served_operations  # noqa: F401 (PATH_PARAM: for the fuzz sweeps)
from support.world import (
    INFO,
    first_delivery,
    first_message,
    make_tenant,
    operator_token,
    seed_held,
    seed_inbox,
    seed_rule,
    seed_webhook,
)

from postern.core import keys
from postern.core.auth import authenticate
from postern.core.errors import InvalidInput
from postern.core.ids import new_id
from postern.core.mail import outbound
from postern.core.models import (
    AdminToken,
    Agent,
    AgentKey,
    Attachment,
    AuditEvent,
    Customer,
    DownloadLink,
    EnrollmentKey,
    InboundPolicy,
    Inbox,
    MailRule,
    Message,
    QuarantinedMessage,
    RetentionPolicy,
    SendingStop,
    Suppression,
    Thread,
    UsageCalls,
    UsageEvent,
    Webhook,
    WebhookDelivery,
    utcnow,
)
from postern.core.principal import SCOPES

# -- the routes the app serves ------------------------------------------------------

OPERATIONS = served_operations()
AUTHED = [op for op in OPERATIONS if op.auth in ("agent", "admin")]
AGENT_OPS = [op for op in AUTHED if op.auth == "agent"]
ADMIN_OPS = [op for op in AUTHED if op.auth == "admin"]
# /v1/downloads/{token} takes a signed capability, not an id: tests/test_links.py covers it;
# /v1/unsubscribe/{token} a random one: tests/test_suppression.py.
CAPABILITY_PATHS = {"/v1/downloads/{token}", "/v1/unsubscribe/{token}"}
ID_OPS = [op for op in OPERATIONS if op.params and op.path not in CAPABILITY_PATHS]
AGENT_ID_OPS = [op for op in ID_OPS if op.auth == "agent"]

# A valid body for each operation that reads one, so authentication is what is tested.
VALID_BODIES = {
    "POST /v1/inboxes": {},
    "POST /v1/admin/customers": {"label": "initech"},
    "POST /v1/admin/enrollment-keys": {"scopes": ["mailbox:read"], "max_mailboxes": 1},
    "POST /v1/webhooks": {"url": "https://hooks.example.org/in", "event_types": ["message.received"]},
    "PUT /v1/admin/retention": {"days": 30},
    "PUT /v1/admin/inboxes/{inbox_id}/retention": {"days": 30},
    "POST /v1/admin/enrollment-keys/{key_id}/approval": {"require_approval": True},
    "POST /v1/admin/inboxes/{inbox_id}/approval": {"require_approval": True},
}
# The most damaging body a caller could send with a foreign id.
ATTACK_BODIES = {
    "POST /v1/admin/enrollment-keys/{key_id}/revoke": {"revoke_agent_keys": True},
    "PUT /v1/admin/inboxes/{inbox_id}/retention": {"days": 1},
    "POST /v1/admin/approvals/{message_id}/reject": {"note": "no"},
    "POST /v1/admin/enrollment-keys/{key_id}/approval": {"require_approval": True},
    "POST /v1/admin/inboxes/{inbox_id}/approval": {"require_approval": True},
}

# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def acme(client):
    return make_tenant("acme")


@pytest.fixture
def globex(client):
    return make_tenant("globex")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def call(client, op: Operation, ids: dict | None = None, headers: dict | None = None, body=None):
    if body is None and op.method in ("POST", "PUT", "PATCH"):
        body = VALID_BODIES.get(str(op), {})
    return client.simulate_request(op.method, op.url(ids or fake_ids(op)), headers=headers, json=body)


def assert_error(resp, status: int, code: str, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert error["code"] == code, error
    assert error["request_id"] == resp.headers["x-request-id"]
    assert error.get("field") == field, error
    assert "Traceback" not in resp.text
    return error


def denials(code: str | None = None) -> list[AuditEvent]:
    query = AuditEvent.select().where(AuditEvent.outcome == "denied")
    if code:
        query = query.where(AuditEvent.code == code)
    return list(query.order_by(AuditEvent.id))


def tenant_snapshot(customer_id: str, caller_agent: str | None = None) -> dict:
    """Every row a tenant owns (audit aside), to prove a foreign caller changed nothing."""
    rows = {}
    for model in (
        Customer,
        AdminToken,
        EnrollmentKey,
        Agent,
        AgentKey,
        Inbox,
        Thread,
        Message,
        Webhook,
        WebhookDelivery,
        QuarantinedMessage,
        InboundPolicy,
        RetentionPolicy,
        MailRule,
        Attachment,
        DownloadLink,
        UsageEvent,
        UsageCalls,
        SendingStop,
        Suppression,
    ):
        if model is Attachment:  # no customer column: through its message
            owner = Attachment.message.in_(Message.select(Message.id).where(Message.customer == customer_id))
        else:
            owner = (model.id if model is Customer else model.customer) == customer_id
        if model in (InboundPolicy, RetentionPolicy):
            order = (model.customer, model.scope)
        elif model is UsageCalls:
            order = (model.hour, model.enrollment_id, model.agent_id, model.route_class)
        else:
            order = (model.id,)
        if model is UsageCalls and caller_agent:  # the caller's own calls are its usage, not a change to theirs
            owner &= model.agent_id != caller_agent
        found = model.select().where(owner).order_by(*order)
        rows[model.__name__] = [model_to_dict(row, recurse=False) for row in found]
    return rows


def totals() -> dict:
    """Counts that any half-done create would move."""
    return {
        "inboxes": Inbox.select().count(),
        "agents": Agent.select().count(),
        "agent_keys": AgentKey.select().count(),
        "enrollment_keys": EnrollmentKey.select().count(),
        "customers": Customer.select().count(),
        "mailboxes_used": [k.mailboxes_used for k in EnrollmentKey.select().order_by(EnrollmentKey.id)],
        "redemptions": [k.redemptions for k in EnrollmentKey.select().order_by(EnrollmentKey.id)],
    }


# Path parameter -> (kind of object, id prefix). A new parameter fails until mapped.
def id_kind(path: str, param: str) -> tuple[str, str]:
    if param == "inbox_id":
        return "inbox", "inb"
    if param == "agent_id":
        return "agent", "agt"
    if param == "message_id" and path.startswith("/v1/admin/approvals/"):
        return "pending_message", "msg"  # held for approval: what a foreign reviewer would send
    if param == "message_id":
        return "message", "msg"
    if param == "thread_id":
        return "thread", "thr"
    if param == "attachment_id":
        return "attachment", "att"
    if param == "domain":  # a name, not an id: a made-up "dom_…" is no domain at all, so a 404 too
        return "domain", "dom"
    if param == "key_id" and "/enrollment-keys/" in path:
        return "enrollment_key", "enr"
    if param == "key_id" and "/agent-keys/" in path:
        return "agent_key", "key"
    if param == "webhook_id":
        return "webhook", "whk"
    if param == "delivery_id":
        return "delivery", "dlv"
    if param == "held_id":
        return "held", "qua"
    if param == "rule_id":
        return "rule", "rul"
    if param == "customer_id":
        return "customer", "cus"
    if param == "stop_id":
        return "sending_stop", "stp"
    if param == "suppression_id":
        return "suppression", "sup"
    pytest.fail(f"{path}: no object kind known for {{{param}}}; map it in id_kind()")


def fake_ids(op: Operation) -> dict[str, str]:
    return {name: new_id(id_kind(op.path, name)[1]) for name in op.params}


def objects_of(postern, tenant, handle: str) -> tuple[dict[str, str], object]:
    """One of each object under a fresh enrollment of ``tenant``, by kind. The enrollment
    allows a domain of its own, so its domain is its own object as its inbox is."""
    enrolled = tenant.agent_key(handle=handle, domains=[f"{handle}.{tenant.domain}"])
    webhook = seed_webhook(postern, enrolled)
    inbox = seed_inbox(postern, enrolled, username=handle)
    message = first_message(inbox)
    ids = {"inbox": inbox.id, "agent": enrolled.agent.id, "agent_key": enrolled.key.id}
    ids.update(webhook=webhook.id, delivery=first_delivery(webhook).id)
    ids.update(message=message.id, thread=message.thread_id, attachment=message.attachments[0].id)
    ids["enrollment_key"] = enrolled.enrollment.id
    ids["domain"] = f"{handle}.{tenant.domain}"
    ids["held"] = seed_held(postern, inbox)
    ids["rule"] = seed_rule(inbox)
    ids["customer"] = tenant.customer.id
    # A stop of the tenant's that covers no one here: the objects above must keep sending.
    ids["sending_stop"] = SendingStop.create(
        customer=tenant.customer.id, kind="agent", subject_id=new_id("agt"), created_by="cli"
    ).id
    # A message held for human approval (the inbox requires it only for this send).
    Inbox.update(require_approval=True).where(Inbox.id == inbox.id).execute()
    mail = {"to": ["x@example.org"], "subject": "held", "text": "t"}
    held, _ = outbound.send(postern, authenticate(enrolled.agent_key, "agent", INFO), INFO, inbox.id, mail)
    Inbox.update(require_approval=False).where(Inbox.id == inbox.id).execute()
    ids["pending_message"] = held.id
    ids["suppression"] = Suppression.create(
        customer=tenant.customer.id, address=f"gone@{handle}.example.org", reason="manual", created_by="cli"
    ).id
    return ids, enrolled


def redact(message: str, ids: dict[str, str]) -> str:
    for value in ids.values():
        message = message.replace(value, "<id>")
    return message


def assert_indistinguishable(resp_theirs, theirs: dict, resp_missing, missing: dict) -> None:
    foreign = resp_theirs.json["error"]
    absent = assert_error(resp_missing, 404, "not_found")
    assert_error(resp_theirs, 404, absent["code"])
    assert set(foreign) == set(absent)
    assert redact(foreign["message"], theirs) == redact(absent["message"], missing)


def scope_id(scopes) -> str:
    return "+".join(s.split(":")[1] for s in SCOPES if s in scopes) or "none"


# -- 1. scopes ----------------------------------------------------------------------

SCOPE_SUBSETS = [frozenset(c) for n in range(len(SCOPES) + 1) for c in itertools.combinations(SCOPES, n)]

# (method, path, scope needed, status on success, audited action)
AGENT_ENDPOINTS = {
    "create": ("POST", "/v1/inboxes", "mailbox:create", 201, "inbox.create"),
    "list": ("GET", "/v1/inboxes", "mailbox:read", 200, "inbox.list"),
    "read": ("GET", "/v1/inboxes/{inbox_id}", "mailbox:read", 200, "inbox.read"),
    "delete": ("DELETE", "/v1/inboxes/{inbox_id}", "mailbox:create", 204, "inbox.delete"),
    "me": ("GET", "/v1/me", None, 200, "me.read"),
    "usage": ("GET", "/v1/usage", None, 200, "usage.read"),
    "messages": ("GET", "/v1/inboxes/{inbox_id}/messages", "mailbox:read", 200, "message.list"),
    "message": ("GET", "/v1/inboxes/{inbox_id}/messages/{message_id}", "mailbox:read", 200, "message.read"),
    "message-delete": (
        "DELETE",
        "/v1/inboxes/{inbox_id}/messages/{message_id}",
        "mailbox:create",
        204,
        "message.delete",
    ),
    "wait": ("GET", "/v1/inboxes/{inbox_id}/messages/wait?timeout=0", "mailbox:read", 200, "message.wait"),
    "code-wait": ("GET", "/v1/inboxes/{inbox_id}/codes/wait?timeout=0", "mailbox:read", 200, "code.wait"),
    "threads": ("GET", "/v1/inboxes/{inbox_id}/threads", "mailbox:read", 200, "thread.list"),
    "mail-rules": ("GET", "/v1/inboxes/{inbox_id}/mail-rules", "mailbox:read", 200, "mail_rule.list"),
    "thread": ("GET", "/v1/inboxes/{inbox_id}/threads/{thread_id}", "mailbox:read", 200, "thread.read"),
    "send": ("POST", "/v1/inboxes/{inbox_id}/messages", "mailbox:send", 201, "message.send"),
    "reply": ("POST", "/v1/inboxes/{inbox_id}/messages/{message_id}/reply", "mailbox:send", 201, "message.send"),
    "raw-link": ("POST", "/v1/inboxes/{inbox_id}/messages/{message_id}/raw-link", "mailbox:read", 201, "link.create"),
    "attachment-link": (
        "POST",
        "/v1/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}/link",
        "mailbox:read",
        201,
        "link.create",
    ),
    "domains": ("GET", "/v1/domains", "mailbox:read", 200, "domain.list"),
    "domain": ("GET", "/v1/domains/{domain}", "mailbox:read", 200, "domain.read"),
    "domain-verify": ("POST", "/v1/domains/{domain}/verify", "mailbox:read", 200, "domain.verify"),
    "webhook-create": ("POST", "/v1/webhooks", "mailbox:read", 201, "webhook.create"),
    "webhook-list": ("GET", "/v1/webhooks", "mailbox:read", 200, "webhook.list"),
    "webhook-read": ("GET", "/v1/webhooks/{webhook_id}", "mailbox:read", 200, "webhook.read"),
    "webhook-update": ("PATCH", "/v1/webhooks/{webhook_id}", "mailbox:read", 200, "webhook.update"),
    "webhook-delete": ("DELETE", "/v1/webhooks/{webhook_id}", "mailbox:read", 204, "webhook.delete"),
    "webhook-rotate": (
        "POST",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        "mailbox:read",
        200,
        "webhook.rotate_secret",
    ),
    "webhook-deliveries": (
        "GET",
        "/v1/webhooks/{webhook_id}/deliveries",
        "mailbox:read",
        200,
        "webhook.delivery.list",
    ),
    "webhook-retry": (
        "POST",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        "mailbox:read",
        202,
        "webhook.delivery.retry",
    ),
    "webhook-test": ("POST", "/v1/webhooks/{webhook_id}/test", "mailbox:read", 202, "webhook.test"),
}
POST_BODIES = {
    "/v1/inboxes/{inbox_id}/messages": {"to": ["someone@example.org"], "subject": "s", "text": "t"},
    "/v1/inboxes/{inbox_id}/messages/{message_id}/reply": {"text": "thanks"},
    "/v1/webhooks": {"url": "https://hooks.example.org/in", "event_types": ["message.received"]},
    "/v1/webhooks/{webhook_id}": {"description": "changed"},
    # Not an agent route: for tests/test_isolation_openapi.py, which looks bodies up by path.
    "/v1/admin/inboxes/{inbox_id}/retention": {"days": 30},
}


def test_the_scope_matrix_covers_every_agent_operation():
    declared = {(op.method, op.path): op.scope for op in AGENT_OPS}
    assert declared == {(m, p.split("?")[0]): scope for m, p, scope, _, _ in AGENT_ENDPOINTS.values()}


def test_an_enrollment_key_needs_at_least_one_scope(acme, client):
    with pytest.raises(InvalidInput) as refused:
        acme.agent_key(scopes=())
    assert refused.value.field == "scopes"
    resp = client.simulate_post(
        "/v1/admin/enrollment-keys", json={"scopes": [], "max_mailboxes": 1}, headers=bearer(acme.admin_token)
    )
    assert_error(resp, 422, "invalid_field", "scopes")
    assert EnrollmentKey.select().count() == 0


@pytest.mark.parametrize("scopes", SCOPE_SUBSETS, ids=scope_id)
@pytest.mark.parametrize("endpoint", AGENT_ENDPOINTS.values(), ids=AGENT_ENDPOINTS.keys())
def test_scope_matrix(client, postern, acme, endpoint, scopes):
    method, path, needed, ok_status, action = endpoint
    if not scopes:
        with pytest.raises(InvalidInput):  # no key can hold no scope at all
            acme.agent_key(scopes=())
        return
    enrolled = acme.agent_key(scopes=scopes)
    webhook = seed_webhook(postern, enrolled)
    inbox = seed_inbox(postern, enrolled)
    body = POST_BODIES.get(path, {}) if method in ("POST", "PATCH") else None
    message = first_message(inbox)
    url = path.format(
        inbox_id=inbox.id,
        message_id=message.id,
        thread_id=message.thread_id,
        attachment_id=message.attachments[0].id,
        domain=acme.domain,
        webhook_id=webhook.id,
        delivery_id=first_delivery(webhook).id,
    )
    resp = client.simulate_request(method, url, headers=bearer(enrolled.agent_key), json=body)

    if needed is None or needed in scopes:
        assert resp.status_code == ok_status, resp.text
        assert denials() == []
        if path == "/v1/me":
            assert resp.json["scopes"] == sorted(scopes)
        return
    error = assert_error(resp, 403, "insufficient_scope")
    assert error["type"] == "permission_error" and f"'{needed}'" in error["message"]
    assert [i.id for i in Inbox.select()] == [inbox.id]  # nothing created or deleted
    assert [w.id for w in Webhook.select()] == [webhook.id]
    [row] = denials()
    assert (row.code, row.action, row.actor) == ("insufficient_scope", action, "agent")
    assert (row.key_prefix, row.agent_id, row.token_id) == (enrolled.key.key_prefix, enrolled.agent.id, enrolled.key.id)
    assert (row.customer_id, row.enrollment_id) == (acme.customer.id, enrolled.enrollment.id)
    assert row.target == (
        inbox.id
        if "{inbox_id}" in path
        else acme.domain
        if "{domain}" in path
        else webhook.id
        if "{webhook_id}" in path
        else None
    )
    assert row.request_id == resp.headers["x-request-id"]


# -- 2. isolation ---------------------------------------------------------------------


def test_the_sweep_finds_every_route_with_an_id():
    assert {str(op) for op in ID_OPS} >= {
        "GET /v1/inboxes/{inbox_id}",
        "DELETE /v1/inboxes/{inbox_id}",
        "GET /v1/admin/enrollment-keys/{key_id}",
        "POST /v1/admin/enrollment-keys/{key_id}/revoke",
        "GET /v1/admin/agents/{agent_id}",
        "POST /v1/admin/agent-keys/{key_id}/revoke",
        "GET /v1/admin/inboxes/{inbox_id}",
        "DELETE /v1/admin/inboxes/{inbox_id}",
        "GET /v1/admin/inboxes/{inbox_id}/messages",
        "GET /v1/admin/inboxes/{inbox_id}/messages/{message_id}",
        "DELETE /v1/admin/inboxes/{inbox_id}/messages/{message_id}",
        "DELETE /v1/inboxes/{inbox_id}/messages/{message_id}",
        "GET /v1/admin/inboxes/{inbox_id}/threads",
        "GET /v1/admin/inboxes/{inbox_id}/retention",
        "PUT /v1/admin/inboxes/{inbox_id}/retention",
        "DELETE /v1/admin/inboxes/{inbox_id}/retention",
        "POST /v1/admin/approvals/{message_id}/approve",
        "POST /v1/admin/approvals/{message_id}/reject",
        "POST /v1/admin/enrollment-keys/{key_id}/approval",
        "POST /v1/admin/inboxes/{inbox_id}/approval",
    }
    assert all(op.auth in ("agent", "admin") for op in ID_OPS), "an unauthenticated route takes an id"


@pytest.mark.parametrize("op", ID_OPS, ids=str)
def test_another_tenants_ids_look_missing(client, postern, acme, globex, op):
    theirs_by_kind, victim = objects_of(postern, globex, "victim")
    credential = acme.admin_token if op.auth == "admin" else acme.agent_key().agent_key
    theirs = {name: theirs_by_kind[id_kind(op.path, name)[0]] for name in op.params}
    missing = fake_ids(op)
    before = tenant_snapshot(globex.customer.id)

    body = ATTACK_BODIES.get(str(op))
    resp_theirs = call(client, op, theirs, bearer(credential), body)
    resp_missing = call(client, op, missing, bearer(credential), body)

    assert_indistinguishable(resp_theirs, theirs, resp_missing, missing)
    assert tenant_snapshot(globex.customer.id) == before
    own = client.simulate_get(f"/v1/inboxes/{theirs_by_kind['inbox']}", headers=bearer(victim.agent_key))
    assert own.status_code == 200, own.text


@pytest.mark.parametrize("op", AGENT_ID_OPS, ids=str)
def test_agent_keys_see_only_their_own_enrollments_objects(client, postern, acme, op):
    theirs_by_kind, neighbour = objects_of(postern, acme, "neighbour")
    mine = acme.agent_key(handle="me")
    theirs = {name: theirs_by_kind[id_kind(op.path, name)[0]] for name in op.params}
    missing = fake_ids(op)
    before = tenant_snapshot(acme.customer.id, mine.agent.id)

    resp_theirs = call(client, op, theirs, bearer(mine.agent_key))
    resp_missing = call(client, op, missing, bearer(mine.agent_key))

    assert_indistinguishable(resp_theirs, theirs, resp_missing, missing)
    assert tenant_snapshot(acme.customer.id, mine.agent.id) == before
    listing = client.simulate_get("/v1/inboxes", headers=bearer(mine.agent_key))
    assert listing.status_code == 200 and listing.json["data"] == []
    listing = client.simulate_get("/v1/inboxes", headers=bearer(neighbour.agent_key))
    assert [i["id"] for i in listing.json["data"]] == [theirs_by_kind["inbox"]]


def test_org_admin_listings_show_only_their_tenant(client, postern, acme, globex):
    objects_of(postern, acme, "mine")
    objects_of(postern, globex, "theirs")
    acme_token, operator = bearer(acme.admin_token), bearer(operator_token())

    for path in ("/v1/admin/customers", "/v1/admin/enrollment-keys", "/v1/admin/agents", "/v1/admin/audit"):
        field = "id" if path.endswith("customers") else "customer_id"
        seen = {row[field] for row in client.simulate_get(path, headers=acme_token).json["data"]}
        assert seen == {acme.customer.id}, path
        seen = {row[field] for row in client.simulate_get(path, headers=operator).json["data"]}
        assert {acme.customer.id, globex.customer.id} <= seen, path

    # An inbox names its agent, not its customer: compare with the rows themselves.
    owners = {i.id: i.customer_id for i in Inbox.select()}
    seen = {owners[row["id"]] for row in client.simulate_get("/v1/admin/inboxes", headers=acme_token).json["data"]}
    assert seen == {acme.customer.id}
    seen = {owners[row["id"]] for row in client.simulate_get("/v1/admin/inboxes", headers=operator).json["data"]}
    assert seen == {acme.customer.id, globex.customer.id}

    resp = client.simulate_get("/v1/admin/audit", params={"customer_id": globex.customer.id}, headers=acme_token)
    assert resp.status_code == 200 and resp.json["data"] == []
    for params in ({"customer_id": globex.customer.id}, {"enrollment_id": globex.enrollment_keys[0].id}):
        resp = client.simulate_get("/v1/admin/inboxes", params=params, headers=acme_token)
        assert resp.status_code == 200 and resp.json["data"] == [], params
    resp = client.simulate_get(
        "/v1/admin/agents", params={"enrollment_id": globex.enrollment_keys[0].id}, headers=acme_token
    )
    assert resp.status_code == 200 and resp.json["data"] == []


def test_org_admin_cannot_mint_enrollment_keys_for_another_tenant(client, acme, globex):
    before = totals()
    for ref in (globex.customer.id, globex.label):
        body = {"customer_id": ref, "scopes": ["mailbox:create"], "max_mailboxes": 5}
        resp = client.simulate_post("/v1/admin/enrollment-keys", json=body, headers=bearer(acme.admin_token))
        error = assert_error(resp, 404, "not_found")
        assert error["message"] == f"no customer '{ref}'"
    assert totals() == before


def test_customers_are_created_by_operators_only(client, acme, globex):
    resp = client.simulate_post("/v1/admin/customers", json={"label": "initech"}, headers=bearer(acme.admin_token))
    assert_error(resp, 403, "operator_only")
    assert not Customer.select().where(Customer.label == "initech").exists()

    resp = client.simulate_post("/v1/admin/customers", json={"label": "initech"}, headers=bearer(operator_token()))
    assert resp.status_code == 201 and resp.json["label"] == "initech"


# -- 3. key classes -------------------------------------------------------------------


def credential_of(kind: str, tenant) -> str:
    if kind == "admin":
        return tenant.admin_token
    if kind == "operator":
        return operator_token()
    if kind == "agent":
        return tenant.agent_key(handle="wrong-door").agent_key
    return tenant.enrollment_key()[1]


WRONG_CLASS = [(op, kind) for op in AGENT_OPS for kind in ("admin", "operator", "enroll")] + [
    (op, kind) for op in ADMIN_OPS for kind in ("agent", "enroll")
]


@pytest.mark.parametrize("op, kind", WRONG_CLASS, ids=str)
def test_a_key_of_the_wrong_class_is_refused(client, acme, op, kind):
    token = credential_of(kind, acme)
    before = totals()
    error = assert_error(call(client, op, headers=bearer(token)), 403, "wrong_key_type")
    assert error["type"] == "permission_error"
    assert totals() == before
    [row] = denials("wrong_key_type")
    assert row.key_prefix == keys.display_prefix(token) and row.action == "auth"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic YWxhZGRpbjpvcGVu"])
@pytest.mark.parametrize("op", AUTHED, ids=str)
def test_no_key_is_a_401_with_a_challenge(client, op, header):
    headers = {} if header is None else {"Authorization": header}
    resp = call(client, op, headers=headers)
    assert_error(resp, 401, "missing_key")
    assert resp.headers["www-authenticate"] == 'Bearer realm="postern"'
    assert [row.code for row in denials()] == ["missing_key"]


def malformed(kind: str) -> list[str]:
    good = keys.mint(kind).plaintext
    return [
        "nonsense",
        f"pk_{kind}_",
        good[:-1] + ("A" if good[-1] != "A" else "B"),  # checksum typo
        good[:-3],  # truncated
        good + "x",
        good.replace(f"pk_{kind}_", "sk_live_"),
    ]


@pytest.mark.parametrize("op", AUTHED, ids=str)
def test_malformed_and_unknown_keys_are_invalid(client, op):
    for token in [*malformed(op.auth), keys.mint(op.auth).plaintext]:
        resp = call(client, op, headers=bearer(token))
        assert_error(resp, 401, "invalid_key")
        assert resp.headers["www-authenticate"] == 'Bearer realm="postern"'
    assert Inbox.select().count() == 0 and Customer.select().count() == 0


@pytest.mark.parametrize("op", AGENT_OPS, ids=str)
def test_an_expired_agent_key_is_refused(client, acme, op):
    enrolled = acme.agent_key(ttl=dt.timedelta(minutes=5))
    AgentKey.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(AgentKey.id == enrolled.key.id).execute()
    error = assert_error(call(client, op, headers=bearer(enrolled.agent_key)), 401, "key_expired")
    assert error["type"] == "authentication_error"
    [row] = denials("key_expired")
    assert (row.agent_id, row.key_prefix) == (enrolled.agent.id, enrolled.key.key_prefix)


@pytest.mark.parametrize("op", AGENT_OPS, ids=str)
def test_a_revoked_agent_key_is_refused(client, acme, op):
    enrolled = acme.agent_key()
    resp = client.simulate_post(f"/v1/admin/agent-keys/{enrolled.key.id}/revoke", headers=bearer(acme.admin_token))
    assert resp.status_code == 200 and resp.json["revoked_at"]
    assert_error(call(client, op, headers=bearer(enrolled.agent_key)), 401, "key_revoked")
    [row] = denials("key_revoked")
    assert (row.agent_id, row.key_prefix) == (enrolled.agent.id, enrolled.key.key_prefix)


@pytest.mark.parametrize("op", ADMIN_OPS, ids=str)
def test_a_revoked_admin_token_is_refused(client, acme, op):
    AdminToken.update(revoked_at=utcnow()).where(AdminToken.customer == acme.customer.id).execute()
    before = totals()
    assert_error(call(client, op, headers=bearer(acme.admin_token)), 401, "key_revoked")
    assert totals() == before


def test_enroll_refuses_keys_that_are_not_live_enrollment_keys(client, acme):
    revoked_row, revoked = acme.enrollment_key()
    EnrollmentKey.update(revoked_at=utcnow()).where(EnrollmentKey.id == revoked_row.id).execute()
    expired_row, expired = acme.enrollment_key()
    EnrollmentKey.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
        EnrollmentKey.id == expired_row.id
    ).execute()
    cases = [
        ("nonsense", "invalid_key"),
        (keys.mint("enroll").plaintext, "invalid_key"),
        (acme.agent_key().agent_key, "wrong_key_type"),
        (acme.admin_token, "wrong_key_type"),
        (revoked, "key_revoked"),
        (expired, "key_expired"),
    ]
    before = totals()
    for token, code in cases:
        resp = client.simulate_post("/v1/enroll", json={"enrollment_token": token, "agent_handle": "bot"})
        assert_error(resp, 403 if code == "wrong_key_type" else 401, code)
    assert totals() == before


# -- 4. bad input ---------------------------------------------------------------------


def case_id(body) -> str:
    if isinstance(body, tuple):
        return f"raw:{body[1]}"
    shown = ",".join(f"{k}={'<dropped>' if v is DROP else repr(v)}" for k, v in body.items() if v is not TOKEN)
    return shown if len(shown) <= 50 else shown[:47] + "..."


def bad(body, status=422, code="invalid_field", field=None):
    return pytest.param(body, status, code, field, id=case_id(body))


def each(name: str, *values, **kwargs) -> list:
    """One bad case per value of field ``name``, each expected to be blamed on ``name``."""
    return [bad({name: value}, field=name, **kwargs) for value in values]


def post(client, path: str, body, headers: dict | None = None):
    """``body`` is a JSON-able dict, or ("raw", text) sent as is with a JSON content type."""
    if isinstance(body, tuple):
        headers = {**(headers or {}), "Content-Type": "application/json"}
        return client.simulate_post(path, body=body[1], headers=headers)
    return client.simulate_post(path, json=body, headers=headers)


TOKEN = object()  # stands for a live enrollment key
DROP = object()  # removes a field from a valid body

RAW_BODIES = [
    bad(("raw", "{not json"), 400, "malformed_json"),
    bad(("raw", "[]"), 422, "invalid_body"),
    bad(("raw", '"bob"'), 422, "invalid_body"),
]

BAD_INBOXES = [
    bad({"nickname": "x"}, field="nickname"),
    bad({"username": "bob", "is_admin": True}, field="is_admin"),
    *each("username", "", "Bob Smith", "bob!", "-bob", "bob-", "a..b", "bób", "bob@evil.example", "b" * 65, 7, ["bob"]),
    *each("domain", "evil.example", "globex.agents.localhost", "agents.localhost", "sub.acme.agents.localhost"),
    *each("domain", "a b", True),
    *each("display_name", "Bob\nBcc: x@evil.example", "Bob\r", "Bob\0", "x" * 201, {"a": 1}),
    *each("client_id", "a\nb", "x" * 201, 1.5),
    *RAW_BODIES,
]


@pytest.mark.parametrize("body, status, code, field", BAD_INBOXES)
def test_bad_inbox_requests_create_nothing(client, acme, body, status, code, field):
    enrolled = acme.agent_key()
    before = totals()
    assert_error(post(client, "/v1/inboxes", body, bearer(enrolled.agent_key)), status, code, field)
    assert totals() == before
    me = client.simulate_get("/v1/me", headers=bearer(enrolled.agent_key)).json
    assert me["mailboxes_used"] == 0


BAD_ENROLLMENTS = [
    bad(
        {"enrollment_token": TOKEN, "agent_handle": "bot", "scopes": ["mailbox:send"]},
        field="scopes",
    ),
    *(
        bad({"enrollment_token": TOKEN, "agent_handle": handle}, field="agent_handle")
        for handle in ("", "Bad Handle", "bot!", "-bot", "bo\nt", "b" * 65, 5, ["bot"], None)
    ),
    bad({"agent_handle": "bot"}, field="enrollment_token"),
    bad({"enrollment_token": 5, "agent_handle": "bot"}, field="enrollment_token"),
    bad({"enrollment_token": "", "agent_handle": "bot"}, field="enrollment_token"),
    *RAW_BODIES,
]


@pytest.mark.parametrize("body, status, code, field", BAD_ENROLLMENTS)
def test_bad_enrollments_create_nothing(client, acme, body, status, code, field):
    _, token = acme.enrollment_key()
    if isinstance(body, dict):
        body = {k: token if v is TOKEN else v for k, v in body.items()}
    before = totals()
    assert_error(post(client, "/v1/enroll", body), status, code, field)
    assert totals() == before


VALID_KEY = {"scopes": ["mailbox:create"], "max_mailboxes": 1}

BAD_ENROLLMENT_KEYS = [
    bad({"max_redemption": 1}, field="max_redemption"),
    *each("scopes", DROP, None, [], "", ["mailbox:root"], ["mailbox:create", "admin"], [1], {"a": 1}),
    *each("max_mailboxes", DROP, None, "1", -1, 1.5, True, 100_001),
    *each("expires_in", None, "3600", 3600.0, False, 59, -60, 366 * 86400 + 1),
    *each("expires_in", 10**15),
    *each("max_redemptions", 0, -1, "1", True),
    *each("allowed_domains", "acme.agents.localhost", ["globex.agents.localhost"], ["agents.localhost"]),
    *each("allowed_domains", ["evilacme.agents.localhost"], ["evil.example"], ["bad domain"], [5]),
    *each("description", 5, "x" * 201),
    *each("customer_id", 5, ["acme"]),
    bad({"customer_id": "cus_nope"}, 404, "not_found"),
    *RAW_BODIES,
]


@pytest.mark.parametrize("body, status, code, field", BAD_ENROLLMENT_KEYS)
def test_bad_enrollment_key_requests_create_nothing(client, acme, body, status, code, field):
    if isinstance(body, dict):
        body = {k: v for k, v in {**VALID_KEY, **body}.items() if v is not DROP}
    before = totals()
    resp = post(client, "/v1/admin/enrollment-keys", body, bearer(acme.admin_token))
    assert_error(resp, status, code, field)
    assert totals() == before


def test_authentication_comes_before_body_validation(client):
    for path in ("/v1/admin/customers", "/v1/admin/enrollment-keys", "/v1/inboxes"):
        resp = client.simulate_post(path, body="{not json", headers={"Content-Type": "text/plain"})
        assert_error(resp, 401, "missing_key")


def test_client_ids_are_per_enrollment(client, postern, acme):
    first, second = acme.agent_key(handle="one"), acme.agent_key(handle="two")
    a = client.simulate_post("/v1/inboxes", headers=bearer(first.agent_key), json={"client_id": "job-1"})
    b = client.simulate_post("/v1/inboxes", headers=bearer(second.agent_key), json={"client_id": "job-1"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json["id"] != b.json["id"]
