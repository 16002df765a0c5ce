"""A small client of WildDuck's REST API: the calls Postern makes, with WildDuck's
errors turned into ``TemporaryFailure`` (retry later) or ``PermanentFailure``."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

import httpx

from postern.core.backends import PermanentFailure, TemporaryFailure

log = logging.getLogger("postern.wildduck")


#: Special-use folders whose mail is not inbound: our own Sent copies, a person's drafts,
#: and what WildDuck or the person set aside as junk or deleted.
NOT_INBOUND = ("\\Sent", "\\Drafts", "\\Junk", "\\Trash")


@dataclass(frozen=True)
class MessageSummary:
    """One entry of a mailbox listing: ``uid`` is WildDuck's message id, the IMAP UID,
    valid in ``mailbox`` only (a move gives the message a new UID and a new id)."""

    uid: int
    mailbox: str
    message_id: str
    received_at: dt.datetime  # WildDuck's idate, naive UTC; kept by an IMAP move
    size: int

    @property
    def key(self) -> str:
        """What stays the same when a person moves the message to another folder."""
        stamp = self.received_at.isoformat(timespec="milliseconds")
        return hashlib.sha256(f"{self.message_id}|{stamp}|{self.size}".encode()).hexdigest()


class WildDuckApi:
    """Synchronous: provisioning runs inside the inbox transaction, the watcher in its
    own process; neither has an event loop to share."""

    def __init__(self, url: str, access_token: str = "", timeout: float = 10.0):
        headers = {"X-Access-Token": access_token} if access_token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, missing_ok: bool = False, **kwargs) -> dict | None:
        """One call; returns the JSON body, or None for a 404 when ``missing_ok``."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"WildDuck API unreachable ({type(exc).__name__})", retry_after=5) from exc
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TemporaryFailure(
                f"WildDuck API answered {resp.status_code} to {method} {_route(path)}", retry_after=5
            )
        if resp.status_code >= 400:
            raise PermanentFailure(
                f"WildDuck API refused {method} {_route(path)}: {resp.status_code} {_error_of(resp)}",
                code=f"wildduck_{resp.status_code}",
            )
        return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}

    # users and addresses

    def user_of_address(self, address: str) -> str | None:
        found = self.request("GET", f"/addresses/resolve/{address}", missing_ok=True)
        return found["user"] if found and found.get("user") else None

    def user_of_username(self, username: str) -> str | None:
        found = self.request("GET", f"/users/resolve/{username}", missing_ok=True)
        return found["id"] if found else None

    def create_user(self, username: str, address: str, name: str = "") -> str:
        # password False: nobody logs in with a password; humans get app passwords.
        body = {"username": username, "address": address, "password": False, "name": name or address}
        return self.request("POST", "/users", json=body)["id"]

    def delete_user(self, user: str) -> None:
        self.request("DELETE", f"/users/{user}", missing_ok=True)

    def create_app_password(self, user: str, description: str) -> str:
        return self.request("POST", f"/users/{user}/asps", json={"description": description, "scopes": ["imap"]})[
            "password"
        ]

    # mailboxes and messages

    def mailboxes(self, user: str) -> dict[str, str]:
        """Path or special use (``\\Sent``) -> mailbox id."""
        found: dict[str, str] = {}
        for box in self.request("GET", f"/users/{user}/mailboxes")["results"]:
            found[box["path"]] = box["id"]
            if box.get("specialUse"):
                found[box["specialUse"]] = box["id"]
        return found

    def inbound_folders(self, user: str) -> dict[str, int] | None:
        """INBOX and every folder a person may file received mail into (all but
        ``NOT_INBOUND``): id -> ``modifyIndex`` (WildDuck raises it on every change in
        the folder); None when the user is gone."""
        listing = self.request("GET", f"/users/{user}/mailboxes", missing_ok=True)
        if listing is None:
            return None
        return {
            box["id"]: box.get("modifyIndex", 0)
            for box in listing["results"]
            if box.get("specialUse") not in NOT_INBOUND
        }

    def newest_received(self, user: str, mailbox: str) -> dt.datetime | None:
        listing = self.request("GET", f"/users/{user}/mailboxes/{mailbox}/messages", params={"limit": 1})
        return max((_summary(item, mailbox).received_at for item in listing["results"]), default=None)

    def received_since(
        self, user: str, mailbox: str, since: dt.datetime | None, page: int = 100
    ) -> list[MessageSummary] | None:
        """Messages in ``mailbox`` received at or after ``since`` (all when None); None
        when the mailbox is gone. Pages run newest first and stop below ``since``."""
        found: list[MessageSummary] = []
        cursor = None
        while True:
            params = {"limit": page, "order": "desc", **({"next": cursor} if cursor else {})}
            listing = self.request("GET", f"/users/{user}/mailboxes/{mailbox}/messages", params=params, missing_ok=True)
            if listing is None:
                return None
            items = [_summary(item, mailbox) for item in listing["results"]]
            fresh = [m for m in items if since is None or m.received_at >= since]
            found.extend(fresh)
            cursor = listing.get("nextCursor")
            if len(fresh) < len(items) or not cursor:
                return found

    def raw_message(self, user: str, mailbox: str, uid: int) -> bytes | None:
        try:
            resp = self.http.get(f"/users/{user}/mailboxes/{mailbox}/messages/{uid}/message.eml")
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"WildDuck API unreachable ({type(exc).__name__})", retry_after=5) from exc
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise TemporaryFailure(f"WildDuck API answered {resp.status_code} for a message body", retry_after=5)
        return resp.content

    def append(self, user: str, mailbox: str, raw: bytes, *, seen: bool = True) -> int:
        """Upload ``raw`` into ``mailbox``; returns its UID."""
        params = {"unseen": "false" if seen else "true"}
        created = self.request(
            "POST",
            f"/users/{user}/mailboxes/{mailbox}/messages",
            params=params,
            content=raw,
            headers={"Content-Type": "message/rfc822"},
        )
        return created["message"]["id"]


def _summary(item: dict, mailbox: str) -> MessageSummary:
    received = dt.datetime.fromisoformat(item["idate"].replace("Z", "+00:00")).astimezone(dt.UTC)
    return MessageSummary(
        uid=item["id"],
        mailbox=mailbox,
        message_id=item.get("messageId") or "",
        received_at=received.replace(tzinfo=None),
        size=item.get("size") or 0,
    )


def _route(path: str) -> str:
    # Paths carry addresses; the log names the route's first segment only.
    return "/" + path.strip("/").split("/")[0]


def _error_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("code") or body.get("error") or body)[:200]
