"""What every console page shares: the session behind its cookie, CSRF, rendering and
the security headers.

A page handler is ``async def on_x(self, req, resp, ...)`` that calls ``self.web.act``:
``act`` resumes the session and runs the page's core work as the session's admin
principal in the same database step, exactly as ``CoreCaller`` does for the API.
"""

from __future__ import annotations

import functools
from pathlib import Path

import falcon
import jinja2

from postern.api.calls import request_info
from postern.core import audit, consolesessions
from postern.core.db import write_transaction
from postern.core.errors import PosternError

COOKIE = "postern_console"
TEMPLATES = Path(__file__).parent / "templates"

#: No inline script or style anywhere: every script and stylesheet is a file under
#: /console/static. Frames only from this origin (the message frame).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _action(req) -> str:
    """The audit action of a refused console request: ``console POST /console/keys``."""
    return f"console {req.method} {req.path}"[:60]


class SignInNeeded(Exception):
    """No live session: the page answers with the sign-in form (or a redirect to it)."""


def security_headers(resp, *, csp: str = PAGE_CSP, frame: str = "DENY") -> None:
    resp.set_header("Content-Security-Policy", csp)
    resp.set_header("X-Frame-Options", frame)
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Cross-Origin-Opener-Policy", "same-origin")


class Web:
    def __init__(self, postern, runner, waiters):
        self.postern = postern
        self.runner = runner
        self.waiters = waiters
        self.lifetimes = consolesessions.Lifetimes.from_config(postern.config.console)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    # --- sessions -------------------------------------------------------------------------

    def secure_cookie(self, req) -> bool:
        """``https`` as the client used it: the connection's, or ``X-Forwarded-Proto``
        from a trusted proxy (``RequestContext``), or an https ``public_url``."""
        scheme = getattr(req.context, "scheme", None) or req.scheme
        return scheme == "https" or self.postern.config.server.public_url.startswith("https://")

    def set_session_cookie(self, req, resp, secret: str) -> None:
        resp.set_cookie(
            COOKIE,
            secret,
            path="/console",
            http_only=True,
            same_site="Strict",
            secure=self.secure_cookie(req),
            max_age=int(self.lifetimes.absolute.total_seconds()),
        )

    def clear_session_cookie(self, req, resp) -> None:
        resp.unset_cookie(COOKIE, path="/console", same_site="Strict")

    async def act(self, req, fn, *args, csrf: str | None = None, state_changing: bool = False):
        """Resume the session and run ``fn(principal, info, *args)`` in one database step.
        ``state_changing``: the request must carry the session's CSRF token (form field
        ``csrf`` or header ``X-CSRF-Token``), or nothing runs. Returns (session, result)."""
        info = request_info(req)
        secret = req.cookies.get(COOKIE)
        lifetimes = self.lifetimes

        def work():
            found = consolesessions.resume(secret, info, lifetimes)
            if found is None:
                raise SignInNeeded()
            session, principal = found
            if state_changing and not consolesessions.csrf_matches(session, csrf):
                with write_transaction():
                    audit.record(_action(req), principal=principal, info=info, outcome="denied", code="csrf")
                raise falcon.HTTPForbidden(title="Forbidden", description="missing or wrong CSRF token")
            try:
                result = fn(principal, info, *args) if fn is not None else None
            except PosternError as exc:
                if not exc.audited:  # a refusal leaves a trail, as on the API
                    with write_transaction():
                        audit.record(_action(req), principal=principal, info=info, outcome="denied", code=exc.code)
                    exc.audited = True
                raise
            return session, principal, result

        return await self.runner.run(work)

    # --- rendering ------------------------------------------------------------------------

    def render(self, resp, template: str, *, http_status=falcon.HTTP_200, **context) -> None:
        security_headers(resp)
        resp.status = http_status
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self.templates.get_template(template).render(
            outbound=context.pop("outbound", None), flash=context.pop("flash", None), **context
        )


def page(handler):
    """Turn the console's failures into pages: no session → the sign-in form (303 for a
    full page, ``HX-Redirect`` for an htmx request); a refused core call → an error page
    with its status and message (another tenant's id reads as missing, as on the API)."""

    @functools.wraps(handler)
    async def wrapper(self, req, resp, *args, **kwargs):
        try:
            return await handler(self, req, resp, *args, **kwargs)
        except SignInNeeded:
            security_headers(resp)
            if req.get_header("HX-Request"):
                resp.status = falcon.HTTP_200
                resp.set_header("HX-Redirect", "/console/login")
                resp.text = ""
                return
            raise falcon.HTTPSeeOther("/console/login") from None
        except PosternError as exc:
            self.web.render(
                resp,
                "error.html",
                http_status=falcon.code_to_http_status(exc.status),
                code=exc.code,
                message=exc.message,
                session=None,
                principal=None,
            )
            if exc.retry_after is not None:
                resp.set_header("Retry-After", str(int(max(1, exc.retry_after))))

    return wrapper
