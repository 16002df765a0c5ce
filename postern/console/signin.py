"""Sign-in with an admin token or a one-time link, and sign-out."""

from __future__ import annotations

import falcon

from postern.api.calls import request_info
from postern.console.forms import read_form
from postern.console.web import page
from postern.core import consolesessions
from postern.core.errors import PosternError


class LoginResource:
    def __init__(self, web):
        self.web = web

    async def on_get(self, req, resp):
        self.web.render(resp, "login.html", session=None, principal=None, error=None)

    async def on_post(self, req, resp):
        form = await read_form(req, 4096)
        token, info = form.get("token", "").strip(), request_info(req)
        try:
            signed = await self.web.runner.run(
                consolesessions.sign_in_with_token, token or None, info, self.web.lifetimes
            )
        except PosternError as exc:
            # One message for every wrong token: which part was wrong helps only a guesser.
            shown = exc.status == 429 or exc.code == "customer_suspended"
            message = exc.message if shown else "That is not a valid admin token (pk_admin_…)."
            self.web.render(
                resp,
                "login.html",
                http_status=falcon.code_to_http_status(exc.status),
                session=None,
                principal=None,
                error=message,
            )
            if exc.retry_after is not None:
                resp.set_header("Retry-After", str(int(max(1, exc.retry_after))))
            return
        self.web.set_session_cookie(req, resp, signed.secret)
        raise falcon.HTTPSeeOther("/console")


class LinkResource:
    """GET shows a button, POST spends the code: a link previewer or prefetcher that
    follows the URL does not use up the link."""

    def __init__(self, web):
        self.web = web

    async def on_get(self, req, resp):
        code = req.get_param("code") or ""
        self.web.render(resp, "link.html", session=None, principal=None, code=code, error=None)

    async def on_post(self, req, resp):
        form = await read_form(req, 4096)
        try:
            signed = await self.web.runner.run(
                consolesessions.sign_in_with_link, form.get("code", ""), request_info(req), self.web.lifetimes
            )
        except PosternError as exc:
            self.web.render(
                resp,
                "link.html",
                http_status=falcon.code_to_http_status(exc.status),
                session=None,
                principal=None,
                code="",
                error=exc.message,
            )
            return
        self.web.set_session_cookie(req, resp, signed.secret)
        raise falcon.HTTPSeeOther("/console")


class LogoutResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp):
        form = await read_form(req, 4096)
        session, principal, _ = await self.web.act(req, None, csrf=form.get("csrf"), state_changing=True)
        await self.web.runner.run(consolesessions.end, session, principal, request_info(req))
        self.web.clear_session_cookie(req, resp)
        raise falcon.HTTPSeeOther("/console/login")
