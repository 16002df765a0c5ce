"""What a billing backend that takes payments (x402, docs/billing.md) needs from the API
after the action: the ``PAYMENT-RESPONSE`` header on success, and the payment released
when the action failed after it settled, so that a retry reuses it instead of paying twice.

The backend writes both into the request's ``RequestInfo.billing`` during its check
(``postern.api.calls.request_info`` keeps one ``RequestInfo`` per request)."""

from __future__ import annotations

import logging

log = logging.getLogger("postern.api.payments")


class PaymentMiddleware:
    def __init__(self, postern, runner):
        self.postern, self.runner = postern, runner

    async def process_response(self, req, resp, resource, req_succeeded) -> None:
        info = getattr(req.context, "request_info", None)
        billing = info.billing if info is not None else None
        if not billing or "payment_key" not in billing:
            return
        if req_succeeded and int(resp.status_code) < 400:
            resp.set_header("PAYMENT-RESPONSE", billing["payment_response"])
            return
        try:
            await self.runner.run(self.postern.backend("billing").action_failed, info)
        except Exception:  # the payment stays used: the client is refused, never charged twice
            log.exception("could not release payment %s after a failed action", billing["payment_key"])
