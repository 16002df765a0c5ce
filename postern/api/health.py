"""``GET /healthz``: database reachability, schema version and each service's state.

``outbound`` says how mail to outside addresses leaves: ``relay``, ``capture-only``
(kept, never sent) or ``unavailable``.

A service's ``state`` is ``starting`` (started, not serving yet), ``running`` (serving),
``restarting`` (dead; ``reason`` says how it died and why, ``next_attempt_in`` when the
supervisor starts it again), ``stopped`` or ``failed``. ``status`` is ``degraded`` while
any service is not serving after having been started once."""

from __future__ import annotations

import logging

import falcon
import peewee

from postern.core import migrations
from postern.core.mail.outcome import outbound_mode
from postern.core.models import ServiceState, utcnow

log = logging.getLogger("postern.api")


def health_snapshot() -> dict:
    """Read what /healthz reports; raises if the database is unreachable."""
    version = migrations.current_version()
    services = [
        {
            "name": row.name,
            "host": row.host,
            "state": row.state,
            "pid": row.pid,
            "restarts": row.restarts,
            "last_exit": row.last_exit,
            "reason": row.reason,
            "next_attempt_in": _seconds_until(row.next_attempt_at) if row.state == "restarting" else None,
            "updated_at": row.updated_at.isoformat() + "Z",
        }
        for row in ServiceState.select().order_by(ServiceState.host, ServiceState.name)
    ]
    return {"schema_version": version, "services": services}


def _seconds_until(when) -> float | None:
    return None if when is None else round(max(0.0, (when - utcnow()).total_seconds()), 1)


def not_serving(service: dict) -> bool:
    """A service that should serve and does not: waiting to restart, given up, or
    starting again after a death (a first start is not yet a fault)."""
    return service["state"] in ("restarting", "backoff", "failed") or (
        service["state"] == "starting" and service["restarts"] > 0
    )


class HealthResource:
    """Liveness and readiness in one: 200 when the database answers, else 503."""

    OPENAPI = {
        "get": {
            "summary": "Health of the API, its database and supervised services",
            "security": [],
            "responses": {
                "200": {
                    "description": "The database answers",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                },
                "503": {
                    "description": "The database does not answer",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                },
            },
        }
    }

    def __init__(self, runner, postern=None):
        self.runner = runner
        self.postern = postern

    def _outbound(self) -> dict | None:
        """The outbound mode, without its route: this endpoint answers anyone, and the
        smarthost or endpoint mail leaves through is the operator's to know."""
        return None if self.postern is None else outbound_mode(self.postern).as_json(with_route=False)

    async def on_get(self, req, resp) -> None:
        try:
            snapshot = await self.runner.run(health_snapshot)
        except (peewee.PeeweeException, OSError) as exc:  # what this endpoint exists to report
            log.warning("health check: database unreachable: %s", exc)
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "5")
            resp.media = {
                "status": "unavailable",
                "database": {"ok": False, "error": type(exc).__name__},
                "services": [],
            }
            return
        degraded = any(not_serving(s) for s in snapshot["services"])
        resp.media = {
            "status": "degraded" if degraded else "ok",
            "database": {"ok": True, "schema_version": snapshot["schema_version"]},
            "services": snapshot["services"],
            "outbound": self._outbound(),
        }
