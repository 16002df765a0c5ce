"""Agent-facing identity: ``POST /v1/enroll`` and ``GET /v1/me``."""

from __future__ import annotations

import datetime as dt

import falcon

from postern.api.bodies import read_json, reject_unknown
from postern.api.docs import operation, ref
from postern.core.enrollment import describe_key, redeem
from postern.core.views import enrolled_json, me_json

ENROLL_REQUEST = {
    "type": "object",
    "required": ["enrollment_token", "agent_handle"],
    "properties": {
        "enrollment_token": {"type": "string", "description": "a pk_enroll_… key"},
        "agent_handle": {"type": "string", "maxLength": 64, "pattern": "^[a-z0-9][a-z0-9._-]*$"},
    },
}


class EnrollResource:
    OPENAPI = {
        "post": operation(
            "Redeem an enrollment key for an agent key (shown once)",
            {
                201: ("The agent and its new key", ref("Enrollment")),
                401: ("Unknown, expired or revoked enrollment key", ref("Error")),
                403: ("Redemption limit reached", ref("Error")),
                422: ("A field is missing or invalid", ref("Error")),
            },
            body=ENROLL_REQUEST,
            auth=None,
        )
    }

    def __init__(self, caller):
        self.caller = caller
        self.ttl = dt.timedelta(seconds=caller.postern.config.auth.agent_key_ttl_seconds)

    async def on_post(self, req, resp):
        body = await read_json(req, max_bytes=4096)
        reject_unknown(body, set(ENROLL_REQUEST["properties"]))
        caller = self.caller

        def enroll(info, token, handle):
            return redeem(
                info, token, handle, agent_key_ttl=self.ttl,
                on_failure=caller.on_failure, before_mint=caller.enrollment_charge(req, info),
            )  # fmt: skip

        result = await caller.anonymous(req, enroll, body.get("enrollment_token"), body.get("agent_handle"))
        resp.status = falcon.HTTP_201
        resp.media = enrolled_json(result)


class MeResource:
    OPENAPI = {
        "get": operation(
            "What this key is: agent, scopes, quota and expiry",
            {200: ("The key's identity", ref("Me")), 401: ("No valid agent key", ref("Error"))},
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        me = await self.caller.as_agent(req, describe_key, scope=None)  # any key may ask what it is
        resp.media = me_json(me)
