"""Isolation sweep generated from the served ``/v1/openapi.json``.

Every operation the document lists with an id in its path is called with ids that
belong to another tenant (and, for agent operations, to another enrollment of the
same tenant), with query strings and bodies that schemathesis generates from the
operation's own schema, and must answer exactly what a made-up id gets: 404, the same headers, the same body
byte for byte once ids and request ids are taken out, and no row of the owner changed.
(Whether they also take the same time is measured by bench/isolation_timing.py: a
timing comparison has no place in a test.)

tests/test_tenancy.py sweeps the routes as ``build_routes`` sees them, with bodies
kept by hand; this sweep reads what clients read, so an operation added to the
document (a plugin's route included) is attacked without anyone listing it.
"""

from __future__ import annotations

import falcon.testing
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.core import NOT_SET
from support.world import make_tenant
from test_tenancy import (
    CAPABILITY_PATHS,
    PATH_PARAM,
    POST_BODIES,
    VALID_BODIES,
    id_kind,
    objects_of,
    tenant_snapshot,
)

from postern.api import create_app
from postern.core.config import load_config
from postern.core.ids import new_id
from postern.core.runtime import build_postern

METHODS = ("get", "post", "put", "patch", "delete")
# Headers that differ between any two responses, whatever they answer.
PER_RESPONSE_HEADERS = {"x-request-id", "content-length", "date"}
BODY_REFUSALS = (400, 413, 422)


def served_document(modules: list[str]) -> dict:
    config = load_config(environ={})
    config.plugins.modules = modules
    app = create_app(build_postern(config, open_db=False))
    return falcon.testing.TestClient(app).simulate_get("/v1/openapi.json").json


def id_operations(doc: dict) -> list[tuple[str, str, str]]:
    """(method, path, auth) of every documented operation with an id in its path."""
    found = []
    for path, item in doc["paths"].items():
        if PATH_PARAM.search(path) and path not in CAPABILITY_PATHS:
            found += [(m.upper(), path, item[m].get("x-postern-auth")) for m in METHODS if m in item]
    return found


# The demo plugin's routes are in the document too, as a third party's would be.
DOCUMENT = served_document(["support.demo_plugin"])
OPERATIONS = id_operations(DOCUMENT)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


def op_id(op) -> str:
    return f"{op[0]} {op[1]}"


def url(path: str, ids: dict[str, str]) -> str:
    return PATH_PARAM.sub(lambda m: ids[m.group(1)], path)


def comparable(resp, ids: dict[str, str]) -> tuple:
    """What a caller can observe of a response, with the ids it sent and its request id
    taken out: the status, the headers, and the body's exact bytes (key order, spacing,
    escaping, the message's wording), not merely its parsed JSON."""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in PER_RESPONSE_HEADERS}
    request_id = resp.headers["x-request-id"]
    assert resp.json["error"]["request_id"] == request_id
    body = resp.content.replace(request_id.encode(), b"<request id>")
    for value in ids.values():
        body = body.replace(value.encode(), b"<id>")
    return resp.status_code, headers, body


@pytest.fixture
def config(config):
    config.plugins.modules = ["support.demo_plugin"]  # its route is attacked too
    return config


def test_the_document_yields_the_operations_with_ids():
    listed = {op_id(op) for op in OPERATIONS}
    assert {"GET /v1/inboxes/{inbox_id}", "PATCH /v1/webhooks/{webhook_id}", "GET /v1/domains/{domain}"} <= listed
    assert all(auth in ("agent", "admin") for _, _, auth in OPERATIONS), "an unauthenticated operation takes an id"


@pytest.mark.parametrize("foreign", ["other tenant", "other enrollment"])
@pytest.mark.parametrize("op", OPERATIONS, ids=op_id)
def test_foreign_ids_answer_like_missing_ones(client, postern, op, foreign):
    method, path, auth = op
    if foreign == "other enrollment" and auth != "agent":
        pytest.skip("org admins see every enrollment of their tenant")
    acme = make_tenant("acme")
    owner = make_tenant("globex") if foreign == "other tenant" else acme
    theirs_by_kind, victim = objects_of(postern, owner, "victim")
    attacker = None if auth == "admin" else acme.agent_key(handle="attacker")
    credential = acme.admin_token if attacker is None else attacker.agent_key
    caller = attacker.agent.id if attacker is not None else None
    params = PATH_PARAM.findall(path)
    theirs = {name: theirs_by_kind[id_kind(path, name)[0]] for name in params}
    headers = {"Authorization": f"Bearer {credential}"}

    # No shrinking: a leak shows in any failing case, and shrinking one takes minutes.
    @settings(
        max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None, phases=[Phase.generate]
    )
    @given(case=SCHEMA[path][method].as_strategy())
    def attack(case):
        missing = {name: new_id(id_kind(path, name)[1]) for name in params}
        before = tenant_snapshot(owner.customer.id, caller)
        sent = dict(headers=headers, params=case.query or {})
        if case.body is not NOT_SET:
            sent["json"] = case.body
        resp_theirs = client.simulate_request(method, url(path, theirs), **sent)
        resp_missing = client.simulate_request(method, url(path, missing), **sent)
        # A body the operation refuses may be refused before the id is looked up: then
        # both answer the same 4xx, which is just as silent about the foreign object.
        assert resp_missing.status_code in (404, *BODY_REFUSALS), resp_missing.text
        assert comparable(resp_theirs, theirs) == comparable(resp_missing, missing)
        assert tenant_snapshot(owner.customer.id, caller) == before

    attack()
    # And once with a body the operation accepts, so the lookup itself is reached.
    body = {**VALID_BODIES, **POST_BODIES}.get(path, {}) if method in ("POST", "PATCH", "PUT") else None
    missing = {name: new_id(id_kind(path, name)[1]) for name in params}
    resp_theirs = client.simulate_request(method, url(path, theirs), headers=headers, json=body)
    resp_missing = client.simulate_request(method, url(path, missing), headers=headers, json=body)
    assert resp_missing.status_code == 404, resp_missing.text
    assert comparable(resp_theirs, theirs) == comparable(resp_missing, missing)
    own = client.simulate_get(
        f"/v1/inboxes/{theirs_by_kind['inbox']}", headers={"Authorization": f"Bearer {victim.agent_key}"}
    )
    assert own.status_code == 200, own.text
