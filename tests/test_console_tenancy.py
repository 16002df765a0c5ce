"""Every console route with an id, swept as test_tenancy.py sweeps the API: an org admin
given another tenant's ids gets the same 404 page as for ids that do not exist, and
nothing changes. Routes are read from ``postern.console.routes``, so a new page with an
id is swept (or fails here until its parameter is mapped)."""

from __future__ import annotations

import re
import string

import pytest
from support.world import INFO, make_tenant
from test_console import csrf_of, post, sign_in
from test_tenancy import objects_of, tenant_snapshot

from postern import console
from postern.core import sendingstops
from postern.core.db import DatabaseRunner
from postern.core.ids import new_id
from postern.core.principal import CLI

POSTS = {
    "suspend",
    "resume",
    "revoke",
    "delete",
    "download",
    "verify",
    "rotate-secret",
    "redeliver",
    "approve",
    "reject",
}


def kind_of(path: str, param: str) -> tuple[str, str]:
    """(kind of object in ``objects_of``, prefix of a made-up id)."""
    if param == "key_id":
        return ("agent_key", "key") if "/agent-keys/" in path else ("enrollment_key", "enr")
    kinds = {
        "inbox_id": ("inbox", "inb"),
        "message_id": ("message", "msg"),
        "agent_id": ("agent", "agt"),
        "customer_id": ("customer", "cus"),
        "domain": ("domain", "dom"),
        "webhook_id": ("webhook", "whk"),
        "delivery_id": ("delivery", "dlv"),
        "stop_id": ("stop", "stp"),
    }
    if param not in kinds:
        pytest.fail(f"{path}: no object kind known for {{{param}}}; map it in kind_of()")
    return kinds[param]


def console_routes(postern):
    runner = DatabaseRunner(1)
    try:
        found = []
        for path, _ in console.routes(postern, runner, None):
            params = [name for _, name, _, _ in string.Formatter().parse(path) if name]
            if params and params != ["name"]:  # /console/static/{name} serves files by name
                found.append((path, params))
        return found
    finally:
        runner.shutdown()


def test_every_console_id_route_hides_other_tenants(client, postern):
    a, b = make_tenant("acme"), make_tenant("bolt")
    objects_of(postern, a, "mine")
    theirs, _ = objects_of(postern, b, "theirs")
    theirs["stop"] = sendingstops.stop_sending(CLI, INFO, "customer", b.customer.id, "theirs").id
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    before = tenant_snapshot(b.customer.id)
    routes = console_routes(postern)
    assert len(routes) >= 15
    for path, params in routes:
        foreign = {p: theirs[kind_of(path, p)[0]] for p in params}
        missing = {p: new_id(kind_of(path, p)[1]) for p in params}
        for ids in (foreign, missing):
            url = path.format(**ids)
            is_post = path.rsplit("/", 1)[1] in POSTS
            result = post(client, url, cookies, csrf) if is_post else client.simulate_get(url, cookies=cookies)
            ids["_result"] = result
        one, two = foreign.pop("_result"), missing.pop("_result")
        assert one.status_code == two.status_code == 404, (path, one.status_code, two.status_code)
        shown = [re.sub(r"'[^']*'", "'<id>'", r.text) for r in (one, two)]
        for value in [*foreign.values(), *missing.values()]:
            shown = [s.replace(value, "<id>") for s in shown]
        assert shown[0] == shown[1], path
    assert tenant_snapshot(b.customer.id) == before  # nothing of theirs changed
