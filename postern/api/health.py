"""``GET /healthz``: database reachability, schema version and each service's state.

``outbound`` says how mail to outside addresses leaves: ``relay``, ``direct``, ``capture-only``
(kept, never sent) or ``unavailable``.

A service's ``state`` is ``starting`` (started, not serving yet), ``running`` (serving),
``restarting`` (dead; ``reason`` says how it died and why, ``next_attempt_in`` when the
supervisor starts it again), ``stopped`` or ``failed``. ``status`` is ``degraded`` while
any service is not serving after having been started once.

``backends``: the receiving and DNS backends and whether what they depend on answers
(their ``probe``: WildDuck's API and LMTP), with the reason when not, in words that name
no host. The sending side (a smarthost, ACS) is not probed here: this endpoint answers
anyone, and it must not make Postern open connections to a third party on request;
an outbound outage queues mail, shows in the messages' status and in /metrics, and
``postern doctor`` checks it. Probed at most every ``PROBE_CACHE_SECONDS`` per
API worker, so frequent health checks do not hammer a backend; ``status`` is
``degraded`` while one is unreachable. Only a database that does not answer is a 503."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import falcon
import peewee

from postern.core import migrations
from postern.core.backends import ROLES
from postern.core.doctor.checks import probe_backend
from postern.core.doctor.report import FAIL
from postern.core.mail.outcome import outbound_mode
from postern.core.models import ServiceState, utcnow

log = logging.getLogger("postern.api")

#: The roles /healthz probes: what Postern needs to take mail in (see the docstring).
HEALTH_ROLES = tuple(role for role in ROLES if role != "send")

#: Seconds a probe of the backends is reused by this worker.
PROBE_CACHE_SECONDS = 10.0
#: Seconds each network wait of a probe may take (a health check must answer soon).
PROBE_TIMEOUT = 3.0


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


class BackendProbes:
    """Each active backend's reachability, probed at most every ``ttl`` seconds: the
    requests that arrive meanwhile get the last answer, and those that arrive while a
    probe runs wait for it rather than start their own."""

    def __init__(self, postern, ttl: float = PROBE_CACHE_SECONDS, timeout: float = PROBE_TIMEOUT):
        self.postern = postern
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._at: float | None = None
        self._rows: list[dict] = []

    async def rows(self) -> list[dict]:
        if self._fresh():
            return self._rows
        return await asyncio.get_running_loop().run_in_executor(None, self._refresh)

    def _fresh(self) -> bool:
        return self._at is not None and time.monotonic() - self._at < self.ttl

    def _refresh(self) -> list[dict]:
        with self._lock:
            if not self._fresh():
                self._rows = self._probe()
                self._at = time.monotonic()
            return self._rows

    def _probe(self) -> list[dict]:
        rows = []
        for role in HEALTH_ROLES:
            try:
                backend = self.postern.active(role)
            except Exception as exc:  # noqa: BLE001  (a backend that does not build: start-up says so)
                log.warning("health: the %s backend does not build: %s", role, exc)
                continue
            if backend is None:
                continue
            failed = [f for f in probe_backend(self.postern, backend, self.timeout) if f.status == FAIL]
            if failed:
                log.warning("health: %s backend %s: %s", role, backend.name, "; ".join(f.detail for f in failed))
            reason = "; ".join(f"{f.check}: {f.reason or 'unreachable'}" for f in failed)
            rows.append({"role": role, "backend": backend.name, "reachable": not failed, "reason": reason or None})
        return rows


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
        self.probes = None if postern is None else BackendProbes(postern)

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
                "backends": [],
            }
            return
        backends = [] if self.probes is None else await self.probes.rows()
        degraded = any(not_serving(s) for s in snapshot["services"]) or not all(b["reachable"] for b in backends)
        resp.media = {
            "status": "degraded" if degraded else "ok",
            "database": {"ok": True, "schema_version": snapshot["schema_version"]},
            "services": snapshot["services"],
            "outbound": self._outbound(),
            "backends": backends,
        }
