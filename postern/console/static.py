"""The console's own files (stylesheet, script, vendored htmx), read once at start."""

from __future__ import annotations

from pathlib import Path

import falcon

STATIC = Path(__file__).parent / "static"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".txt": "text/plain"}


class StaticResource:
    def __init__(self):
        # A fixed set, by name: a request can never name a path outside the directory.
        self.files = {
            p.name: (p.read_bytes(), TYPES.get(p.suffix, "application/octet-stream")) for p in STATIC.iterdir()
        }

    async def on_get(self, req, resp, name):
        found = self.files.get(name)
        if found is None:
            raise falcon.HTTPNotFound()
        resp.data, resp.content_type = found
        resp.set_header("X-Content-Type-Options", "nosniff")
        # The vendored library's name carries its version, so it may be cached for long.
        resp.cache_control = ["public", "max-age=31536000, immutable" if "-2." in name else "max-age=300"]
