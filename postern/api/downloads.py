"""Signed download links: ask with a key, fetch with the link alone (once)."""

from __future__ import annotations

from urllib.parse import quote

import falcon

from postern.api.docs import operation, path_param, ref
from postern.core.mail import links

LINK_RESPONSES = {
    201: ("A single-use link", ref("DownloadLink")),
    404: ("No such message or attachment for this key", ref("Error")),
}


class RawLinkResource:
    OPENAPI = {
        "post": operation(
            "A signed, single-use link to the raw message (RFC 5322 bytes)",
            LINK_RESPONSES,
            params=(path_param("inbox_id"), path_param("message_id")),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, inbox_id, message_id):
        await _issue(self.caller, req, resp, inbox_id, message_id, None)


class AttachmentLinkResource:
    OPENAPI = {
        "post": operation(
            "A signed, single-use link to an attachment",
            LINK_RESPONSES,
            params=(path_param("inbox_id"), path_param("message_id"), path_param("attachment_id")),
            scope="mailbox:read",
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_post(self, req, resp, inbox_id, message_id, attachment_id):
        await _issue(self.caller, req, resp, inbox_id, message_id, attachment_id)


async def _issue(caller, req, resp, inbox_id, message_id, attachment_id):
    ttl = caller.postern.config.auth.download_link_ttl_seconds

    link = await caller.as_agent(
        req, links.issue, inbox_id, message_id, attachment_id, ttl, scope="mailbox:read", action="link.create"
    )
    resp.status = falcon.HTTP_201
    # Never from the request: its Host header is whatever the caller (or anyone in front of
    # the server) put there, and the link is a credential.
    url = f"{caller.postern.config.server.public_url}/v1/downloads/{link.token}"
    resp.media = {"url": url, "expires_at": link.expires_at.isoformat() + "Z"}


class DownloadResource:
    """The link is the credential. Bytes are served as an opaque download, never
    rendered: mail content is untrusted and must not run in this origin."""

    OPENAPI = {
        "get": operation(
            "Fetch what a download link points to (works once)",
            {
                200: ("The bytes, as an attachment", None),
                404: ("Not a valid link", ref("Error")),
                410: ("Used already or expired", ref("Error")),
            },
            params=(path_param("token"),),
            auth=None,
        )
    }

    def __init__(self, caller):
        self.caller = caller

    async def on_get(self, req, resp, token):
        download = await self.caller.anonymous(req, links.redeem, token)
        resp.content_type = "application/octet-stream"
        resp.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(download.filename)}")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Content-Security-Policy", "sandbox")
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Postern-Content-Type", download.content_type)
        resp.data = download.data
