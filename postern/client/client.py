"""The Postern client: ``Postern(api_key=..., base_url=...)``, or
``Postern(enrollment_key=..., agent_handle=...)`` for a client that redeems its own agent
key and renews it before it expires (postern.client.renewal).

They default to ``POSTERN_API_KEY``, ``POSTERN_ENROLLMENT_KEY``, ``POSTERN_AGENT_HANDLE``
and ``POSTERN_API_BASE_URL``. Calls retry on 429 and
503 (and on a connection that could not be made) honouring ``Retry-After``; sends carry
an ``Idempotency-Key`` so a retried send is sent once; ``wait`` uses a read timeout longer
than the wait it asks for.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from postern.client import errors
from postern.client.models import (
    CodeResult,
    DownloadLink,
    Enrollment,
    Inbox,
    MailRule,
    Me,
    Message,
    Page,
    Thread,
    WaitResult,
)
from postern.client.renewal import Renewal
from postern.client.usage import UsageReports

DEFAULT_BASE_URL = "http://127.0.0.1:8800"
RETRY_STATUSES = (429, 503)
MAX_WAIT = 300  # the server's cap on one wait, in seconds


class Postern:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        enrollment_key: str | None = None,
        agent_handle: str | None = None,
        renew_before: float = 0.2,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        x402_payer=None,
    ):
        """With ``enrollment_key`` and ``agent_handle`` the client redeems them for its
        agent key on its first call (or ``enroll()``), renews that key when
        ``renew_before`` of its lifetime is left and whenever the server answers
        ``key_expired``; never on ``key_revoked``. Both come from the environment
        (``POSTERN_ENROLLMENT_KEY``, ``POSTERN_AGENT_HANDLE``) unless an ``api_key`` or
        ``enrollment_key`` is passed. An ``api_key`` given too is used until it expires.
        ``x402_payer`` (``postern.client.payments.X402Payer``, a test wallet) pays an x402
        offer in a 402 and makes the call once more (docs/billing.md)."""
        #: The mock world when ``postern.testing.mock_client()`` made this client, for
        #: injecting mail; ``None`` against a real server.
        self.mock = None
        if transport is None and mock_requested(base_url):
            raise ValueError(MOCK_MOVED)
        if api_key is None and enrollment_key is None:
            enrollment_key = os.environ.get("POSTERN_ENROLLMENT_KEY") or None
        if enrollment_key and agent_handle is None:
            agent_handle = os.environ.get("POSTERN_AGENT_HANDLE") or None
        key = api_key if api_key is not None else os.environ.get("POSTERN_API_KEY", "")
        self._renewal = Renewal(enrollment_key, agent_handle, renew_before, key) if enrollment_key else None
        self._api_key = key
        self.base_url = (base_url or os.environ.get("POSTERN_API_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_retries = max_retries
        self.x402_payer = x402_payer
        #: The ``PAYMENT-RESPONSE`` header of the last call that paid (base64 JSON).
        self.last_payment_response: str | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self.inboxes = Inboxes(self)
        self.messages = Messages(self)
        self.threads = Threads(self)
        self.usage = UsageReports(self)

    def __repr__(self) -> str:  # never the key
        return f"Postern(base_url={self.base_url!r})"

    def __enter__(self) -> Postern:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def api_key(self) -> str:
        """The agent key calls are made with (the latest renewal's, with an enrollment key)."""
        return self._renewal.key if self._renewal is not None else self._api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        if self._renewal is not None:
            self._renewal.key = value
        else:
            self._api_key = value

    def enroll(self) -> Enrollment:
        """Redeem the enrollment key now (a renewal when the handle is already an agent)
        and use the new agent key from here on."""
        if self._renewal is None:
            raise ValueError("enroll() needs an enrollment_key and agent_handle (or POSTERN_ENROLLMENT_KEY)")
        data = None
        while data is None:  # None: another thread renewed meanwhile; redeem for this caller anyway
            data = self._renewal.renew(self._renewal.key, self._redeem, force=True)
        return Enrollment.from_json(data)

    def _redeem(self) -> tuple[dict, str | None]:
        renewal = self._renewal
        resp = self._exchange(
            "POST",
            "/v1/enroll",
            json={"enrollment_token": renewal.enrollment_key, "agent_handle": renewal.agent_handle},
        )
        return resp.json(), resp.headers.get("Date")

    def me(self) -> Me:
        """What this key is: agent, scopes, mailbox quota and expiry."""
        return Me.from_json(self.request("GET", "/v1/me"))

    def download(self, link: DownloadLink | str) -> bytes:
        """Fetch a signed download link (works once, until it expires)."""
        url = link.url if isinstance(link, DownloadLink) else link
        return self.request("GET", url, raw=True)

    # ---- plumbing ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        timeout: float | None = None,
        raw: bool = False,
        authenticated: bool = True,
    ):
        renewal = self._renewal if authenticated else None
        key = renewal.current(self._redeem) if renewal is not None else self.api_key
        call = {"json": json, "params": params, "headers": headers, "timeout": timeout}
        try:
            resp = self._exchange(method, path, key=key if authenticated else None, **call)
        except errors.AuthenticationFailed as exc:
            # An expired key is renewed and the call made once more: the server refused
            # it before doing anything. A revoked key is a human's decision: never renewed.
            if renewal is None or exc.code != "key_expired":
                raise
            renewal.renew(key, self._redeem, force=True)
            resp = self._exchange(method, path, key=renewal.key, **call)
        except errors.PaymentRequired as exc:
            # Refused before anything was done: pay the offer once and make the call again.
            if self.x402_payer is None or not exc.payment_required:
                raise
            signature = self.x402_payer.signature(exc.payment_required, f"{self.base_url}{path}")
            call["headers"] = {**(headers or {}), "PAYMENT-SIGNATURE": signature}
            resp = self._exchange(method, path, key=key if authenticated else None, **call)
            self.last_payment_response = resp.headers.get("PAYMENT-RESPONSE")
        if raw:
            return resp.content
        return resp.json() if resp.content else None

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One call with its retries; raises the typed error of a 4xx or 5xx answer."""
        headers = dict(headers or {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs = {"json": json, "params": params, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=10.0)
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                # Only a connection never made is safe to repeat for any method.
                if isinstance(exc, httpx.ConnectError) and attempt < self.max_retries:
                    time.sleep(_backoff(attempt, None))
                    continue
                raise errors.ConnectionFailed(f"{method} {path}: {exc}") from exc
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(_backoff(attempt, retry_after))
                continue
            if resp.status_code >= 400:
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                error = errors.from_response(resp.status_code, body, retry_after)
                if resp.status_code == 402:
                    error.payment_required = resp.headers.get("PAYMENT-REQUIRED")
                raise error
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def page(self, path: str, params: dict, parse) -> Page:
        """One page of a listing (``page_token`` in ``params`` picks which)."""
        data = self.request("GET", path, params=params)
        return Page([parse(item) for item in data["data"]], data.get("next_page_token"))

    def paginate(self, path: str, params: dict, parse) -> Iterator:
        """Every item of a listing, fetching page after page as the caller iterates."""
        params = dict(params)
        while True:
            page = self.request("GET", path, params=params)
            yield from (parse(item) for item in page["data"])
            token = page.get("next_page_token")
            if not token:
                return
            params["page_token"] = token


# The client never imports the server (it ships alone as ``postern-client``), so mock
# mode, which runs the server in process, is reached from the server package instead.
# Refusing beats falling back to a real URL: a test meant to be offline must not send mail.
MOCK_MOVED = (
    "mock mode is not built into Postern() any more: use `from postern.testing import mock_client; "
    "client = mock_client()` (needs the server package: pip install postern), and unset "
    "POSTERN_MOCK / POSTERN_API_BASE_URL=mock. See docs/sdk.md, 'Mock mode'."
)


def mock_requested(base_url: str | None) -> bool:
    """Whether ``base_url`` (None: from the environment) asks for mock mode."""
    if base_url is not None:
        return base_url == "mock"
    return os.environ.get("POSTERN_MOCK", "").lower() in ("1", "true", "yes") or (
        os.environ.get("POSTERN_API_BASE_URL") == "mock"
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, 60.0)
    return min(0.5 * 2**attempt, 8.0)


class Inboxes:
    def __init__(self, client: Postern):
        self._c = client

    def create(
        self,
        username: str | None = None,
        *,
        domain: str | None = None,
        display_name: str | None = None,
        client_id: str | None = None,
    ) -> Inbox:
        """Create an inbox. With ``client_id`` the call is idempotent: the same id returns
        the inbox made the first time."""
        body = {"username": username, "domain": domain, "display_name": display_name, "client_id": client_id}
        data = self._c.request("POST", "/v1/inboxes", json={k: v for k, v in body.items() if v is not None})
        return Inbox.from_json(data)

    def list(self, *, limit: int | None = None) -> Iterator[Inbox]:
        return self._c.paginate("/v1/inboxes", {"limit": limit}, Inbox.from_json)

    def page(self, *, page_token: str | None = None, limit: int | None = None) -> Page:
        return self._c.page("/v1/inboxes", {"limit": limit, "page_token": page_token}, Inbox.from_json)

    def get(self, inbox_id: str) -> Inbox:
        return Inbox.from_json(self._c.request("GET", f"/v1/inboxes/{inbox_id}"))

    def delete(self, inbox_id: str) -> None:
        self._c.request("DELETE", f"/v1/inboxes/{inbox_id}")

    def mail_rules(self, inbox_id: str) -> list[MailRule]:
        """The allow and block entries that bind this inbox (read-only: admins set them).
        A send to a recipient they refuse fails with ``recipient_blocked`` or
        ``recipient_not_allowed``."""
        data = self._c.request("GET", f"/v1/inboxes/{inbox_id}/mail-rules")
        return [MailRule.from_json(r) for r in data["data"]]


class Messages:
    def __init__(self, client: Postern):
        self._c = client

    def list(
        self,
        inbox_id: str,
        *,
        thread_id: str | None = None,
        direction: str | None = None,
        received_after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """Newest first, every page as you iterate."""
        params = {"thread_id": thread_id, "direction": direction, "received_after": received_after, "limit": limit}
        return self._c.paginate(f"/v1/inboxes/{inbox_id}/messages", params, Message.from_json)

    def page(
        self,
        inbox_id: str,
        *,
        page_token: str | None = None,
        limit: int | None = None,
        thread_id: str | None = None,
        direction: str | None = None,
        received_after: str | None = None,
    ) -> Page:
        """One page of ``list``, for callers that hand the token on (e.g. an MCP tool)."""
        params = {"thread_id": thread_id, "direction": direction, "received_after": received_after, "limit": limit}
        params["page_token"] = page_token
        return self._c.page(f"/v1/inboxes/{inbox_id}/messages", params, Message.from_json)

    def get(self, inbox_id: str, message_id: str, *, max_length: int | None = None) -> Message:
        params = {"max_length": max_length}
        return Message.from_json(self._c.request("GET", f"/v1/inboxes/{inbox_id}/messages/{message_id}", params=params))

    def delete(self, inbox_id: str, message_id: str) -> None:
        """Delete a message for good, with its attachments and download links (needs the
        scope ``mailbox:create``). A message still being sent raises ``Conflict``."""
        self._c.request("DELETE", f"/v1/inboxes/{inbox_id}/messages/{message_id}")

    def send(
        self,
        inbox_id: str,
        *,
        to: list,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        cc: list | None = None,
        bcc: list | None = None,
        reply_to: list | None = None,
        headers: dict | None = None,
        attachments: list[dict] | None = None,
        idempotency_key: str | None = None,
        bulk: bool | None = None,
    ) -> Message:
        """Send; retried sends with the same ``idempotency_key`` (one is made for you)
        are sent once and return the first result. ``bulk``: a newsletter or notice to
        many, sent with a one-click unsubscribe link per recipient."""
        body = _drop_none(
            to=to, cc=cc, bcc=bcc, subject=subject, text=text, html=html,
            reply_to=reply_to, headers=headers, attachments=attachments, bulk=bulk,
        )  # fmt: skip
        return self._post_send(f"/v1/inboxes/{inbox_id}/messages", body, idempotency_key)

    def reply(
        self,
        inbox_id: str,
        message_id: str,
        *,
        text: str | None = None,
        html: str | None = None,
        reply_all: bool = False,
        cc: list | None = None,
        bcc: list | None = None,
        headers: dict | None = None,
        attachments: list[dict] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        body = _drop_none(
            text=text, html=html, reply_all=reply_all or None, cc=cc, bcc=bcc, headers=headers, attachments=attachments
        )
        return self._post_send(f"/v1/inboxes/{inbox_id}/messages/{message_id}/reply", body, idempotency_key)

    def wait(self, inbox_id: str, *, after: str | None = None, timeout: int = 30) -> WaitResult:
        """Block until there is mail for you, or ``timeout`` seconds pass (at most 300).
        Without ``after`` it returns every message of the inbox no such wait has returned
        to this agent yet, mail that arrived before the first wait included, each once (the
        server keeps the position: docs/mail.md, "Delivery cursors"). With ``after`` it
        returns mail newer than that cursor (a ``cursor`` a wait returned) and moves nothing."""
        if not 0 <= timeout <= MAX_WAIT:
            raise ValueError(f"timeout must be from 0 to {MAX_WAIT} seconds")
        params = {"after": after, "timeout": timeout}
        data = self._c.request("GET", f"/v1/inboxes/{inbox_id}/messages/wait", params=params, timeout=timeout + 30)
        return WaitResult.from_json(data)

    def wait_for_code(self, inbox_id: str, *, from_domain: str | None = None, timeout: int = 30) -> CodeResult:
        """Block until a message with a one-time code or verification link arrives that
        no ``wait_for_code`` has returned to you yet (mail that came before the call
        included), or ``timeout`` seconds pass (at most 300); return just its code, link,
        sender and id. ``from_domain``: only mail from that domain or a subdomain of it.
        Independent of ``wait``: neither moves the other's position."""
        if not 0 <= timeout <= MAX_WAIT:
            raise ValueError(f"timeout must be from 0 to {MAX_WAIT} seconds")
        params = {"from_domain": from_domain, "timeout": timeout}
        data = self._c.request("GET", f"/v1/inboxes/{inbox_id}/codes/wait", params=params, timeout=timeout + 30)
        return CodeResult.from_json(data)

    def raw_link(self, inbox_id: str, message_id: str) -> DownloadLink:
        path = f"/v1/inboxes/{inbox_id}/messages/{message_id}/raw-link"
        return self._absolute(DownloadLink.from_json(self._c.request("POST", path)))

    def attachment_link(self, inbox_id: str, message_id: str, attachment_id: str) -> DownloadLink:
        path = f"/v1/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}/link"
        return self._absolute(DownloadLink.from_json(self._c.request("POST", path)))

    def _absolute(self, link: DownloadLink) -> DownloadLink:
        """A server without ``server.public_url`` answers links relative to the API root;
        make them usable where this client reaches the API (an MCP client gets them too)."""
        if link.url.startswith("/"):
            return dataclasses.replace(link, url=self._c.base_url + link.url)
        return link

    def _post_send(self, path: str, body: dict, idempotency_key: str | None) -> Message:
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        return Message.from_json(self._c.request("POST", path, json=body, headers={"Idempotency-Key": key}))


class Threads:
    def __init__(self, client: Postern):
        self._c = client

    def list(self, inbox_id: str, *, limit: int | None = None) -> Iterator[Thread]:
        return self._c.paginate(f"/v1/inboxes/{inbox_id}/threads", {"limit": limit}, Thread.from_json)

    def page(self, inbox_id: str, *, page_token: str | None = None, limit: int | None = None) -> Page:
        params = {"limit": limit, "page_token": page_token}
        return self._c.page(f"/v1/inboxes/{inbox_id}/threads", params, Thread.from_json)

    def get(self, inbox_id: str, thread_id: str) -> Thread:
        return Thread.from_json(self._c.request("GET", f"/v1/inboxes/{inbox_id}/threads/{thread_id}"))


def _drop_none(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}
