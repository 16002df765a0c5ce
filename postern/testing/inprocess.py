"""An httpx transport that serves requests with a Postern ASGI app in this process.

No sockets: requests run on a private event loop thread, through httpx's own ASGI
transport, so the full app (auth, scopes, quotas, audit, waits) answers exactly as a
server would. Used by the SDK's tests and by mock mode (``postern.testing``); it lives
beside the server, not in ``postern.client``, because it is only useful with the app.
"""

from __future__ import annotations

import asyncio
import threading

import httpx


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, app):
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="postern-inprocess", daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(self._call(request, body), self._loop)
        status, headers, content = future.result()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _call(self, request: httpx.Request, body: bytes):
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        response = await self._asgi.handle_async_request(forwarded)
        content = await response.aread()
        return response.status_code, response.headers.multi_items(), content

    def close(self) -> None:
        """Clients sharing this transport close it when they close: keep serving."""

    def shutdown(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
