"""Serving the MCP server: stdio for one agent, streamable HTTP for many."""

from __future__ import annotations

import json

from postern.mcp.keys import ADMIN_REFUSAL, bearer, is_admin_key
from postern.mcp.server import build_server


def run_stdio(*, api_key: str | None = None, base_url: str | None = None) -> None:
    server = build_server(api_key=api_key, base_url=base_url)
    try:
        server.run("stdio")
    finally:
        server.postern_clients.close()
        server.postern_keys.close()


def http_app(*, base_url: str | None = None, host: str = "127.0.0.1"):
    """The ASGI app: ``/mcp`` (streamable HTTP) and ``/healthz``. No key is taken from
    the environment: every agent brings its own."""
    from starlette.responses import JSONResponse

    server = build_server(api_key="", base_url=base_url)

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request):
        return JSONResponse({"status": "ok", "waits_in_flight": server.postern_waits.count})

    return RefuseAdminKeys(server.streamable_http_app(host=host)), server


class RefuseAdminKeys:
    """ASGI middleware: an org admin key never reaches a tool, not even to be rejected there."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
            if is_admin_key(bearer(headers)):
                body = json.dumps({"error": {"code": "admin_key_refused", "message": ADMIN_REFUSAL}}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def run_http(*, host: str, port: int, base_url: str | None = None, trusted_proxies=()) -> None:
    """``trusted_proxies``: the only peers whose X-Forwarded-For/-Proto uvicorn believes
    (``server.trusted_proxies``, as for the API; uvicorn's own default trusts 127.0.0.1)."""
    import uvicorn

    app, server = http_app(base_url=base_url, host=host)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
        )
    finally:
        server.postern_clients.close()
        server.postern_keys.close()
