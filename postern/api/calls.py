"""How resources reach the core: authenticate and act in one database-thread hop.

Every refusal is audited here unless the core already audited it, so an agent or
admin poking at another tenant's ids leaves a trail even when the answer is a 404.
"""

from __future__ import annotations

import re

from postern.core import audit
from postern.core.auth import authenticate, bearer_token, require_scope
from postern.core.db import DatabaseRunner, GroupCommitter, write_transaction
from postern.core.errors import PosternError
from postern.core.principal import RequestInfo

#: Concurrent first delivery attempts per API worker; more sends wait for a free one.
DELIVERY_THREADS = 4


def request_info(req) -> RequestInfo:
    """The request id and the client's address (behind a trusted proxy, the forwarded
    client's: ``RequestContext`` and postern/api/forwarded.py)."""
    client_addr = getattr(req.context, "client_addr", None) or req.remote_addr
    return RequestInfo(request_id=getattr(req.context, "request_id", None), client_addr=client_addr)


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
        info = request_info(req)
        return await self.runner.run(lambda: fn(info, *args, **kwargs))

    async def check(self, req, realm: str, scope: str | None = None, action: str | None = None) -> None:
        """Authenticate (and check ``scope``) before a body is read, so a caller without
        the right key learns nothing from body validation. The action itself
        authenticates (and checks the scope) again, in its own step: a key revoked
        meanwhile stops it."""
        info, token = request_info(req), bearer_token(req.get_header("Authorization"))

        def work():
            principal = authenticate(token, realm, info)
            if scope:
                require_scope(principal, scope, info, action or _action(req), _target(req))

        await self.runner.run(work)

    async def _call(self, req, realm, fn, *args, **kwargs):
        info, token = request_info(req), bearer_token(req.get_header("Authorization"))
        action, target = _action(req), _target(req)

        def work():
            with audit.deferring_reads() as reads:
                principal = authenticate(token, realm, info)
                try:
                    return fn(principal, info, *args, **kwargs), reads
                except PosternError as exc:
                    if not exc.audited:
                        with write_transaction():
                            audit.record(
                                action, principal=principal, info=info, outcome="denied", code=exc.code, target=target
                            )
                        exc.audited = True
                    raise

        result, reads = await self.runner.run(work)
        if reads:  # answered only once its audit rows are committed
            await self.read_audits.run(audit.write_rows, reads)
        return result
