"""``GET /.well-known/mta-sts.txt``: the MTA-STS policy of the mail domain whose
``mta-sts.<domain>`` host the request was made to (RFC 8461 3.3; docs/dns.md).

Senders fetch it over HTTPS only, with a certificate valid for ``mta-sts.<domain>``: put
the API behind a TLS proxy that answers for those names. ``?domain=mta-sts.<domain>``
asks for a name other than the request's host, so the same URL answers a proxy's "may I
get a certificate for this name?" question (Caddy's on-demand TLS ``ask``)."""

from __future__ import annotations

import falcon

from postern.api.docs import operation, query_param
from postern.core.zones import mta_sts_policy


class MtaStsResource:
    OPENAPI = {
        "get": operation(
            "The MTA-STS policy of the mail domain this mta-sts host serves",
            {200: ("The policy (text/plain)", None), 404: ("Not an mta-sts host of a Postern mail domain", None)},
            params=(query_param("domain"),),
            auth=None,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp):
        host = req.get_param("domain") or req.host or ""
        postern = self.caller.postern
        policy = await self.caller.runner.run(mta_sts_policy, postern, host[:300])
        if policy is None:
            resp.status = falcon.HTTP_404
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = "no MTA-STS policy here\n"
            return
        resp.content_type = "text/plain"
        resp.cache_control = ["max-age=300"]
        resp.text = policy
