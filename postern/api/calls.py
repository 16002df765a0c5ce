"""How resources reach the core: authenticate and act in one database-thread hop.

Every refusal is audited here unless the core already audited it, so an agent or
admin poking at another tenant's ids leaves a trail even when the answer is a 404.
"""

from __future__ import annotations

import re
from functools import partial

from postern.core import audit, metrics, usage
from postern.core.auth import authenticate, bearer_token, require_scope
from postern.core.db import DatabaseRunner, GroupCommitter, on_next_write, take_write_hooks, write_transaction
from postern.core.errors import PosternError, RateLimited
from postern.core.principal import RequestInfo
from postern.core.ratelimits import audit_in_aggregate, failure_throttle

#: Concurrent first delivery attempts per API worker; more sends wait for a free one.
DELIVERY_THREADS = 4


def request_info(req) -> RequestInfo:
    """The request id and the client's address (behind a trusted proxy, the forwarded
    client's: ``RequestContext`` and postern/api/forwarded.py), and its x402 payment.
    One per request, kept on ``req.context``: the billing backend writes its outcome
    into it and ``PaymentMiddleware`` reads it after the response (postern/api/payments.py)."""
    info = getattr(req.context, "request_info", None)
    if info is None:
        client_addr = getattr(req.context, "client_addr", None) or req.remote_addr
        info = RequestInfo(
            request_id=getattr(req.context, "request_id", None),
            client_addr=client_addr,
            payment=req.get_header("PAYMENT-SIGNATURE"),
        )
        req.context.request_info = info
    return info


PATH_PARAM = re.compile(r"\{[^}]*\}")


def route_action(method: str, template: str) -> str:
    """The audit action of a refusal on a route: ``POST /v1/inboxes/{}/messages/{}/reply``.
    Parameter names are left out: the route stays recognisable, and the longest core
    route fits the audit column (60 characters), which its full template did not; on
    PostgreSQL that refusal then failed with a 500. ``create_app`` checks every route,
    a plugin's included, so a longer one fails at start-up, not on its first refusal."""
    return f"{method} {PATH_PARAM.sub('{}', template)}"


def _action(req) -> str:
    return route_action(req.method, getattr(req, "uri_template", None) or req.path)


def _account(reads: list, hooks: list) -> None:
    """A request's read audit rows and the writes its action left (its API call in the
    usage ledger, when it made no transaction of its own), in the read audits' shared
    group commit: no commit of its own."""
    if reads:
        audit.write_rows(reads)
    for fn in hooks:
        fn()


def _call_subject(principal) -> tuple:
    return principal.customer_id, principal.enrollment_id, principal.agent_id


def rate_class(req) -> str:
    """The route class a request counts under: what its resource says for the method
    (``RATE_CLASSES = {"POST": "send"}``), else read for GET/HEAD and write otherwise."""
    declared = getattr(req.context, "rate_classes", None) or {}
    return declared.get(req.method) or ("read" if req.method in ("GET", "HEAD") else "write")


def _target(req) -> str | None:
    params = getattr(req.context, "path_params", None) or {}
    return next(iter(params.values()), None)


class CoreCaller:
    """Runs ``fn(principal, info, *args)`` on the database pool after authenticating
    the request's bearer key for ``realm`` (``agent`` or ``admin``).

    This is the one place the API checks an agent key's scopes: resources name the
    scope a route needs (``as_agent(..., scope=)``) and never test ``principal.scopes``
    themselves, so every route refuses a missing scope with the same audited 403."""

    def __init__(self, postern, runner):
        self.postern = postern
        self.runner = runner
        # Read audit rows of concurrent requests commit together (see audit.deferring_reads).
        self.read_audits = GroupCommitter(transaction=audit.read_audit_transaction)
        runner.on_shutdown(self.read_audits.shutdown)
        # Delivery attempts made by API sends wait on the send backend's network; they get
        # threads (and database connections) of their own (see api/messages.py).
        self.deliveries = DatabaseRunner(DELIVERY_THREADS)
        runner.on_shutdown(self.deliveries.shutdown)
        # Request rate limits (docs/limits.md); None when [limits] enabled = false.
        self.limiter = postern.limiter
        self.on_failure = failure_throttle(self.limiter)

    async def as_agent(self, req, fn, *args, scope: str | None, action: str | None = None, **kwargs):
        """Authenticate an agent key, refuse it (403 ``insufficient_scope``) unless it holds
        ``scope``, then run ``fn(principal, info, *args, **kwargs)``, all in one database
        step; a refusal is audited as ``action`` (default: the route) against the route's
        first path parameter. ``scope`` has no default: a route that needs none (``/v1/me``)
        says ``scope=None``, so forgetting it is a ``TypeError``, not an open route."""
        if scope is None:
            return await self._call(req, "agent", fn, *args, **kwargs)

        action, target = action or _action(req), _target(req)

        def scoped(principal, info, *args, **kwargs):
            require_scope(principal, scope, info, action, target)
            return fn(principal, info, *args, **kwargs)

        return await self._call(req, "agent", scoped, *args, **kwargs)

    async def as_admin(self, req, fn, *args, **kwargs):
        return await self._call(req, "admin", fn, *args, **kwargs)

    async def anonymous(self, req, fn, *args, **kwargs):
        """Run ``fn(info, *args)`` for a request that presents no key (an enrollment, a
        download link): counted against the client's address (``ip_anonymous``)."""
        info = request_info(req)

        def work():
            self._charge(req, info, {"ip": info.client_addr}, "anonymous")
            return fn(info, *args, **kwargs)

        return await self.runner.run(work)

    def _charge(self, req, info: RequestInfo, subjects: dict, route_class: str) -> None:
        """Count this request against the rate limits; refuse it with 429 past one.
        Refusals are audited in aggregate (the 1st, 10th, 100th… of a window)."""
        if self.limiter is None:
            return
        try:
            req.context.rate_verdict = self.limiter.require(subjects, route_class, client=info.client_addr)
        except RateLimited as exc:
            metrics.RATE_LIMITED.labels(exc.limit).inc()
            refused = self.limiter.count_refusal(exc)
            if audit_in_aggregate(refused):
                with write_transaction():
                    audit.record(
                        _action(req), principal=getattr(req.context, "principal", None), info=info, outcome="denied",
                        code="rate_limited", target=f"refused:{refused}",
                    )  # fmt: skip
            exc.audited = True
            raise

    def charge_agent(self, req, info: RequestInfo, principal, route_class: str | None = None) -> None:
        """Count an agent's request against its key's, enrollment's and customer's limits
        (admin tokens are the operator's and are not limited)."""
        if principal.kind != "agent":
            return
        subjects = {
            "agent": principal.token_id,
            "enrollment": principal.enrollment_id,
            "customer": principal.customer_id,
        }
        self._charge(req, info, subjects, route_class or rate_class(req))

    def enrollment_charge(self, req, info: RequestInfo):
        """``redeem``'s ``before_mint``: one redemption against the enrollment key's and
        its customer's ``enroll`` limits."""
        if self.limiter is None:
            return None
        return lambda key: self._charge(req, info, {"enrollment": key.id, "customer": key.customer_id}, "enroll")

    async def check(self, req, realm: str, scope: str | None = None, action: str | None = None) -> None:
        """Authenticate (and check ``scope``) before a body is read, so a caller without
        the right key learns nothing from body validation. The action itself
        authenticates (and checks the scope) again, in its own step: a key revoked
        meanwhile stops it."""
        info, token = request_info(req), bearer_token(req.get_header("Authorization"))

        def work():
            principal = authenticate(token, realm, info, self.on_failure)
            if scope:
                require_scope(principal, scope, info, action or _action(req), _target(req))

        await self.runner.run(work)

    async def _call(self, req, realm, fn, *args, **kwargs):
        info, token = request_info(req), bearer_token(req.get_header("Authorization"))
        action, target = _action(req), _target(req)

        def work():
            with audit.deferring_reads() as reads:
                principal = authenticate(token, realm, info, self.on_failure)
                req.context.principal = principal
                self.charge_agent(req, info, principal)
                if principal.kind == "agent":  # counted with the action's own writes (docs/usage.md)
                    on_next_write(partial(usage.count_calls, *_call_subject(principal), rate_class(req)))
                try:
                    return fn(principal, info, *args, **kwargs), reads, take_write_hooks()
                except PosternError as exc:
                    exc.write_hooks = take_write_hooks()  # a refused call counts too, once
                    if not exc.audited:
                        with write_transaction():
                            audit.record(
                                action, principal=principal, info=info, outcome="denied", code=exc.code, target=target
                            )
                        exc.audited = True
                    raise
                except BaseException:
                    take_write_hooks()  # never left behind for this thread's next request
                    raise

        try:
            result, reads, hooks = await self.runner.run(work)
        except PosternError as exc:
            if getattr(exc, "write_hooks", None):
                await self.read_audits.run(_account, [], exc.write_hooks)
            raise
        if reads or hooks:  # answered only once its audit rows are committed
            await self.read_audits.run(_account, reads, hooks)
        return result
