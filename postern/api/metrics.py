"""``GET /metrics`` (Prometheus text format) and the middleware that counts requests.

Not part of the JSON API (no OpenAPI entry): ``create_app`` mounts it beside the
console when ``[metrics] enabled``. Who may scrape: with ``metrics.token`` set, a request
bearing ``Authorization: Bearer <token>``, else 401; with no token, only a request
from a loopback address that carries no forwarding header (a reverse proxy on this
host would make every client look local), else 404, as if there were no such page.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time

import falcon

from postern.api.errors import ApiError
from postern.core import metrics
from postern.core.deferred import after_iteration

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


class MetricsMiddleware:
    """Counts every answered request by its route *template* (``/v1/inboxes/{inbox_id}``),
    never its path, so the label takes one value per route; a path no route matched is
    ``<unmatched>``. Put first, so its clock starts before any other middleware."""

    async def process_request(self, req, resp) -> None:
        req.context.metrics_started = time.perf_counter()

    async def process_response(self, req, resp, resource, req_succeeded) -> None:
        started = getattr(req.context, "metrics_started", None)
        route = route_label(req, resource)
        method = req.method if req.method in METHODS else "OTHER"
        took = None if started is None else time.perf_counter() - started
        # Counted once the loop iteration's responses are out (core/deferred.py).
        after_iteration(_count, route, method, metrics.status_class(resp.status_code), took)


def _count(route: str, method: str, status: str, took: float | None) -> None:
    metrics.API_REQUESTS.labels(route, method, status).inc()
    if took is not None:
        metrics.API_LATENCY.labels(route).observe(took)


def route_label(req, resource) -> str:
    template = getattr(req, "uri_template", None)
    return template if resource is not None and template else metrics.UNMATCHED


class MetricsResource:
    def __init__(self, token: str):
        self.token = token.encode() if token else b""

    async def on_get(self, req, resp) -> None:
        if self.token:
            scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                resp.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
                raise ApiError(401, "unauthorized", "GET /metrics needs the metrics token as a bearer token")
        elif not from_loopback(req):
            raise falcon.HTTPNotFound()
        body = await asyncio.to_thread(metrics.generate_latest)
        resp.content_type = metrics.CONTENT_TYPE
        resp.data = body


def from_loopback(req) -> bool:
    if any(req.get_header(name) for name in FORWARDING_HEADERS):
        return False
    address = getattr(req.context, "client_addr", None) or req.remote_addr or ""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a unix socket's peer has no address: a token is needed there
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def routes(config) -> list[tuple[str, object]]:
    if not config.metrics.enabled:
        return []
    return [("/metrics", MetricsResource(config.metrics.token))]
