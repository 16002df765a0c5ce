"""The REST API: a falcon ASGI app whose resources parse, call the core and shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi
import orjson
import peewee

from postern import console
from postern.api import (
    admin,
    adminmail,
    approvals,
    domains,
    downloads,
    mailrules,
    messages,
    quarantine,
    retention,
    sendingstops,
    suppressions,
    webhooks,
)
from postern.api import metrics as metrics_api
from postern.api import usage as usage_api
from postern.api.agents import EnrollResource, MeResource
from postern.api.calls import CoreCaller, route_action
from postern.api.errors import handle_database_error, handle_domain_error, handle_unexpected, serialize_error
from postern.api.health import HealthResource
from postern.api.inboxes import InboxesResource, InboxResource
from postern.api.middleware import Lifespan, RequestContext
from postern.api.openapi import OpenApiResource
from postern.api.payments import PaymentMiddleware
from postern.api.wellknown import MtaStsResource
from postern.core.db import DatabaseRunner
from postern.core.doorbell import Waiters
from postern.core.errors import PosternError
from postern.core.models import AuditEvent


@dataclass(frozen=True)
class Route:
    """A path and the resource serving it; plugins return these from ``postern_routes``."""

    path: str
    resource: Any


def build_routes(
    postern, runner: DatabaseRunner, waiters: Waiters | None = None, *, notice_disconnects: bool = False
) -> list[Route]:
    """Core routes, then every plugin's; the OpenAPI document covers them all."""
    caller = CoreCaller(postern, runner)
    waiters = waiters or Waiters(postern.config.database_url)
    inbox = "/v1/inboxes/{inbox_id}"
    routes = [
        Route("/healthz", HealthResource(runner, postern)),
        Route("/v1/enroll", EnrollResource(caller)),
        Route("/v1/me", MeResource(caller)),
        Route("/v1/inboxes", InboxesResource(caller)),
        Route("/v1/inboxes/{inbox_id}", InboxResource(caller)),
        Route(f"{inbox}/messages", messages.MessagesResource(caller)),
        Route(f"{inbox}/messages/wait", messages.WaitResource(caller, waiters, notice_disconnects=notice_disconnects)),
        Route(f"{inbox}/codes/wait", messages.CodeWaitResource(caller, waiters, notice_disconnects=notice_disconnects)),
        Route(f"{inbox}/messages/{{message_id}}", messages.MessageResource(caller)),
        Route(f"{inbox}/messages/{{message_id}}/reply", messages.ReplyResource(caller)),
        Route(f"{inbox}/messages/{{message_id}}/raw-link", downloads.RawLinkResource(caller)),
        Route(
            f"{inbox}/messages/{{message_id}}/attachments/{{attachment_id}}/link",
            downloads.AttachmentLinkResource(caller),
        ),
        Route("/v1/downloads/{token}", downloads.DownloadResource(caller)),
        Route(f"{inbox}/threads", messages.ThreadsResource(caller)),
        Route("/v1/domains", domains.DomainsResource(caller)),
        Route("/v1/domains/{domain}", domains.DomainResource(caller)),
        Route("/v1/domains/{domain}/verify", domains.DomainVerifyResource(caller)),
        Route(f"{inbox}/threads/{{thread_id}}", messages.ThreadResource(caller)),
        Route("/v1/admin/customers", admin.CustomersResource(caller)),
        Route("/v1/admin/customers/{customer_id}", admin.CustomerResource(caller)),
        Route("/v1/admin/customers/{customer_id}/suspend", admin.CustomerSuspensionResource(caller, True)),
        Route("/v1/admin/customers/{customer_id}/resume", admin.CustomerSuspensionResource(caller, False)),
        Route("/v1/admin/enrollment-keys", admin.EnrollmentKeysResource(caller)),
        Route("/v1/admin/enrollment-keys/{key_id}", admin.EnrollmentKeyResource(caller)),
        Route("/v1/admin/enrollment-keys/{key_id}/revoke", admin.EnrollmentKeyRevokeResource(caller)),
        Route("/v1/admin/agents", admin.AgentsResource(caller)),
        Route("/v1/admin/agents/{agent_id}", admin.AgentResource(caller)),
        Route("/v1/admin/agents/{agent_id}/inboxes", admin.AgentInboxesResource(caller)),
        Route("/v1/admin/agent-keys/{key_id}/revoke", admin.AgentKeyRevokeResource(caller)),
        Route("/v1/admin/audit", admin.AuditResource(caller)),
        *(Route(path, resource) for path, resource in webhooks.routes(caller)),
        *(Route(path, resource) for path, resource in quarantine.routes(caller)),
        *(Route(path, resource) for path, resource in mailrules.routes(caller)),
        *(Route(path, resource) for path, resource in adminmail.routes(caller)),
        *(Route(path, resource) for path, resource in retention.routes(caller)),
        *(Route(path, resource) for path, resource in usage_api.routes(caller)),
        *(Route(path, resource) for path, resource in sendingstops.routes(caller)),
        *(Route(path, resource) for path, resource in approvals.routes(caller)),
        *(Route(path, resource) for path, resource in suppressions.routes(caller)),
        Route("/.well-known/mta-sts.txt", MtaStsResource(caller)),
    ]
    for batch in postern.hook.postern_routes(postern=postern):
        routes.extend(batch or ())
    routes.append(Route("/v1/openapi.json", OpenApiResource(routes)))
    return routes


def check_audit_actions(route: Route) -> None:
    """Every refusal on ``route`` must be auditable: its action has to fit the column."""
    limit = AuditEvent.action.max_length
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        if hasattr(route.resource, f"on_{method.lower()}"):
            action = route_action(method, route.path)
            if len(action) > limit:
                raise ValueError(f"route {route.path}: audit action '{action}' is over {limit} characters")


def create_app(postern, runner: DatabaseRunner | None = None, *, notice_disconnects: bool = False) -> falcon.asgi.App:
    """The API app for ``postern``. ``notice_disconnects``: a wait ends when its client
    leaves (for a real ASGI server; see ``WaitResource``)."""
    runner = runner or DatabaseRunner(postern.config.database_threads)
    waiters = Waiters(postern.config.database_url)
    app = falcon.asgi.App(
        middleware=[
            metrics_api.MetricsMiddleware(),
            RequestContext(postern.config.server.trusted_proxies),
            Lifespan(runner, waiters),
            PaymentMiddleware(postern, runner),
        ]
    )
    # orjson encodes a page of 50 message summaries (~35 KB) several times faster than the
    # standard library, which was a fifth of a listing's CPU. Request bodies keep their own
    # parser (api/bodies.py).
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=orjson.dumps)
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(PosternError, handle_domain_error)
    app.add_error_handler(peewee.PeeweeException, handle_database_error)
    for route in build_routes(postern, runner, waiters, notice_disconnects=notice_disconnects):
        check_audit_actions(route)
        app.add_route(route.path, route.resource)
    # The console's HTML pages are not part of the JSON API or its OpenAPI document.
    for path, resource in console.routes(postern, runner, waiters):
        app.add_route(path, resource)
    # Prometheus metrics (docs/operations.md, "Metrics"): not the JSON API's either.
    for path, resource in metrics_api.routes(postern.config):
        app.add_route(path, resource)
    return app
