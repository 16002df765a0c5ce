"""The operator's kill switch for outbound mail (admin tokens; docs/limits.md,
"Stopping sending"): ``/v1/admin/sending-stops`` lists and creates stops, ``DELETE
/v1/admin/sending-stops/{stop_id}`` lifts one."""

from __future__ import annotations

import falcon

from postern.api.bodies import read_json, reject_unknown
from postern.api.docs import operation, path_param, ref
from postern.core import sendingstops
from postern.core.views import sending_stop_json

BODY = {
    "type": "object",
    "properties": {
        "kind": {"enum": list(sendingstops.KINDS), "description": "what to stop"},
        "id": {"type": "string", "description": "the customer's, enrollment key's or agent's id"},
        "reason": {"type": "string", "maxLength": 500, "description": "shown to the agent whose send is refused"},
    },
    "required": ["kind", "id"],
    "additionalProperties": False,
}


class SendingStopsResource:
    OPENAPI = {
        "get": operation(
            "The sending stops in force (an org admin sees its own customer's)",
            {200: ("The stops", ref("SendingStopList"))},
            auth="admin",
        ),
        "post": operation(
            "Stop a customer, an enrollment key or an agent from sending, at once; its queued mail is held",
            {
                201: ("The stop", ref("SendingStop")),
                404: ("No such customer, enrollment key or agent", ref("Error")),
                409: ("Sending is already stopped for it", ref("Error")),
                422: ("kind or id missing or wrong", ref("Error")),
            },
            body=BODY,
            auth="admin",
        ),
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        stops = await self.caller.as_admin(req, lambda principal, info: sendingstops.list_stops(principal))
        resp.media = {"data": [sending_stop_json(s) for s in stops]}

    async def on_post(self, req, resp):
        await self.caller.check(req, "admin")
        body = await read_json(req, max_bytes=2048)
        reject_unknown(body, set(BODY["properties"]))

        def stop(principal, info):
            return sendingstops.stop_sending(
                principal, info, body.get("kind"), body.get("id"), body.get("reason") or ""
            )

        resp.status = falcon.HTTP_201
        resp.media = sending_stop_json(await self.caller.as_admin(req, stop))


class SendingStopResource:
    OPENAPI = {
        "delete": operation(
            "Lift a sending stop; the mail it held leaves on the outbox's next pass",
            {204: ("Lifted", None), 404: ("No such stop", ref("Error"))},
            params=(path_param("stop_id"),),
            auth="admin",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_delete(self, req, resp, stop_id):
        await self.caller.as_admin(req, sendingstops.resume_sending, stop_id)
        resp.status = falcon.HTTP_204


def routes(caller) -> list[tuple[str, object]]:
    return [
        ("/v1/admin/sending-stops", SendingStopsResource(caller)),
        ("/v1/admin/sending-stops/{stop_id}", SendingStopResource(caller)),
    ]
