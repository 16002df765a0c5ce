"""Usage (docs/usage.md): ``GET /v1/usage`` for an agent key, its own enrollment's;
``GET /v1/admin/usage`` for admin tokens, a customer's (``customer_id`` for operator
tokens)."""

from __future__ import annotations

from postern.api.docs import operation, query_param, ref
from postern.core import usage
from postern.core.views import usage_json

PERIOD = (
    query_param("since", {"type": "string", "description": "ISO 8601; default: the start of this month (UTC)"}),
    query_param("until", {"type": "string", "description": "ISO 8601, exclusive; default: the end of this month"}),
)
RESPONSES = {
    200: ("Usage over the period", ref("Usage")),
    422: ("since or until is not an ISO 8601 time, or since is not before until", ref("Error")),
}


class UsageResource:
    """``/v1/usage``: any agent key may read its enrollment's usage, as it may read its
    quota in ``/v1/me``: counts only, never an address or a message."""

    OPENAPI = {
        "get": operation("This key's enrollment's usage over a period (default: this month)", RESPONSES, params=PERIOD)
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        since, until = req.get_param("since"), req.get_param("until")
        found = await self.caller.as_agent(req, usage.read_usage, None, since, until, scope=None)
        resp.media = usage_json(found)


class AdminUsageResource:
    OPENAPI = {
        "get": operation(
            "A customer's usage over a period (default: this month)",
            {**RESPONSES, 404: ("No such customer (or another tenant's)", ref("Error"))},
            params=(query_param("customer_id"), *PERIOD),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        params = (req.get_param(name) for name in ("customer_id", "since", "until"))
        resp.media = usage_json(await self.caller.as_admin(req, usage.read_usage, *params))


def routes(caller) -> list[tuple[str, object]]:
    return [("/v1/usage", UsageResource(caller)), ("/v1/admin/usage", AdminUsageResource(caller))]
