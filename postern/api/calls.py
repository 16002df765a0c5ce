"""How resources reach the core: authenticate and act in one database-thread hop."""

from __future__ import annotations

from postern.core.auth import authenticate, bearer_token
from postern.core.principal import RequestInfo


def request_info(req) -> RequestInfo:
    return RequestInfo(request_id=getattr(req.context, "request_id", None), client_addr=req.remote_addr)


class CoreCaller:
    """Runs ``fn(principal, info, *args)`` on the database pool after authenticating
    the request's bearer key for ``realm`` (``agent`` or ``admin``)."""

    def __init__(self, postern, runner):
        self.postern = postern
        self.runner = runner

    async def as_agent(self, req, fn, *args, **kwargs):
        return await self._call(req, "agent", fn, *args, **kwargs)

    async def as_admin(self, req, fn, *args, **kwargs):
        return await self._call(req, "admin", fn, *args, **kwargs)

    async def anonymous(self, req, fn, *args, **kwargs):
        info = request_info(req)
        return await self.runner.run(lambda: fn(info, *args, **kwargs))

    async def principal(self, req, realm: str):
        """Authenticate first (401/403 before any body is read or validated)."""
        info = request_info(req)
        token = bearer_token(req.get_header("Authorization"))
        return await self.runner.run(authenticate, token, realm, info)

    async def acting_as(self, principal, req, fn, *args, **kwargs):
        """Run ``fn(principal, info, ...)`` for an already authenticated principal."""
        info = request_info(req)
        return await self.runner.run(lambda: fn(principal, info, *args, **kwargs))

    async def _call(self, req, realm, fn, *args, **kwargs):
        info = request_info(req)
        token = bearer_token(req.get_header("Authorization"))

        def work():
            principal = authenticate(token, realm, info)
            return fn(principal, info, *args, **kwargs)

        return await self.runner.run(work)
