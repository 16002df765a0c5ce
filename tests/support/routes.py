"""The operations the app serves, read from its route table and each resource's OpenAPI
declaration, so tests sweep every route (a plugin's included) without a hand-kept list."""

from __future__ import annotations

import dataclasses
import re

from postern.api import build_routes
from postern.core.config import load_config
from postern.core.db import DatabaseRunner
from postern.core.runtime import build_postern

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclasses.dataclass(frozen=True)
class Operation:
    path: str
    method: str
    auth: str | None  # "agent", "admin", or None (unauthenticated)
    scope: str | None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def params(self) -> list[str]:
        return PATH_PARAM.findall(self.path)

    def url(self, ids: dict[str, str]) -> str:
        return PATH_PARAM.sub(lambda m: ids[m.group(1)], self.path)


def served_operations() -> list[Operation]:
    """Every (path, method) the app answers, with the auth and scope its docs declare."""
    postern = build_postern(load_config(environ={}), open_db=False)
    runner = DatabaseRunner(1)
    try:
        routes = build_routes(postern, runner)
    finally:
        runner.shutdown()
    ops = []
    for route in routes:
        docs = getattr(route.resource, "OPENAPI", {})
        for method in METHODS:
            if hasattr(route.resource, f"on_{method.lower()}"):
                op = docs.get(method.lower(), {})
                ops.append(Operation(route.path, method, op.get("x-postern-auth"), op.get("x-postern-scope")))
    return ops
