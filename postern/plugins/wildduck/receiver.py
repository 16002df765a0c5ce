"""``WildDuckReceiver``: every inbox is a WildDuck user whose address is the inbox's.

Provisioning runs inside the transaction that creates the inbox, so the
``wildduck_mailbox`` row (user, folders, watermark) commits with the inbox or not at
all; when that transaction fails after us, the core calls ``deprovision``, which finds
the user made for that inbox (by its username) and removes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from postern.core.backends import BackendError, DnsRecord, Finding, InboxRef, Listen, PermanentFailure, Receiver
from postern.core.db import database, write_transaction
from postern.core.options import host_port_or_empty, option, positive
from postern.core.services import Service
from postern.core.smtp.options import (
    CHECK_AT_LEAST_ONE,
    CHECK_PROCESSES,
    DEFAULT_BIND,
    DEFAULT_HOSTNAME,
    ListenerOptions,
)
from postern.core.smtp.tls import check_tls_files, readable_file_or_empty
from postern.plugins.wildduck.models import WildDuckMailbox, WildDuckOrphan

log = logging.getLogger("postern.wildduck")


def _http_url(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https"):
        raise ValueError(f"must be an http(s) URL, got '{value}'")
    return value


def _redis_url(value: str) -> str:
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"must be a redis:// URL, got '{value}'")
    if value:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ValueError("needs the 'wildduck' extra: pip install 'postern[wildduck]'") from None
    return value


@dataclass(frozen=True)
class WildDuckOptions:
    """``[receive.wildduck]``. The ``smtp_*``, ``hostname``, ``max_recipients``,
    ``threads``, ``processes`` and TLS options configure Postern's SMTP front door."""

    api_url: str = option(check=_http_url, help='WildDuck\'s API, e.g. "http://127.0.0.1:8080"')
    access_token: str = option("", secret=True)
    timeout_seconds: float = option(10.0, check=positive)
    imap_host: str = option("127.0.0.1")
    imap_port: int = option(993)
    imap_tls: bool = option(True)
    lmtp_host: str = option("127.0.0.1")
    lmtp_port: int = option(24)
    redis_url: str = option("", check=_redis_url)
    sweep_seconds: float = option(300.0, check=positive)
    mx_host: str = option("")
    smtp_bind: str = option(DEFAULT_BIND, check=host_port_or_empty, help='host:port, or "" for no SMTP listener')
    hostname: str = option(DEFAULT_HOSTNAME)
    max_recipients: int = option(100, check=CHECK_AT_LEAST_ONE)
    threads: int = option(4, check=CHECK_AT_LEAST_ONE)
    processes: int = option(1, check=CHECK_PROCESSES)
    tls_cert: str = option("", check=readable_file_or_empty)
    tls_key: str = option("", check=readable_file_or_empty)
    require_tls: bool = option(False)

    def __post_init__(self):
        check_tls_files(self.tls_cert, self.tls_key, self.require_tls)

    def listener(self) -> ListenerOptions:
        """The front door's options (the core's SMTP listener, its other limits at their defaults)."""
        return ListenerOptions(
            bind=self.smtp_bind,
            hostname=self.hostname,
            max_recipients=self.max_recipients,
            threads=self.threads,
            processes=self.processes,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            require_tls=self.require_tls,
        )


#: Users made by provisioning that a process remembers (see ``WildDuckReceiver._made``).
MADE_REMEMBERED = 1000


class WildDuckReceiver(Receiver):
    """Receive backend backed by a WildDuck mail server (REST API, LMTP, IMAP)."""

    name = "wildduck"
    description = "WildDuck mailboxes (REST provisioning, LMTP delivery, IMAP for humans)"
    options_class = WildDuckOptions

    def __init__(self, options: WildDuckOptions):
        self.options = options
        self._api = None
        #: Inbox id -> user made for it by this process, most recent last: if the inbox's
        #: transaction rolls back, ``deprovision`` (called right after) knows the user even
        #: when WildDuck no longer answers, and can leave it as an orphan to delete later.
        self._made: OrderedDict[str, str] = OrderedDict()

    @property
    def api(self):
        if self._api is None:
            from postern.plugins.wildduck.api import WildDuckApi

            o = self.options
            self._api = WildDuckApi(o.api_url, o.access_token, o.timeout_seconds)
        return self._api

    def provision(self, inbox: InboxRef) -> None:
        """Find or create the WildDuck user for the address and record it (idempotent).
        A user made here is deleted again if anything after its creation fails."""
        api = self.api
        user = api.user_of_address(inbox.address)
        if user is not None and WildDuckOrphan.get_or_none(WildDuckOrphan.user_id == user) is not None:
            # Left behind by an inbox that rolled back: its mail is not this inbox's.
            api.delete_user(user)
            user = None
        if user is None:
            user = api.user_of_username(username_for(inbox.inbox_id))
        if user is not None:
            # Reused (a retry, or a user that existed before): mail already there is not new.
            _record(api, inbox.inbox_id, user, existing=True)
        else:
            user = api.create_user(username_for(inbox.inbox_id), inbox.address)
            self._remember_made(inbox.inbox_id, user)
            with _deleted_on_failure(self, inbox, user):
                _record(api, inbox.inbox_id, user, existing=False)
        log.info("provisioned %s as WildDuck user %s", inbox.inbox_id, user)

    def deprovision(self, inbox: InboxRef) -> None:
        """Delete the WildDuck user (WildDuck frees the address at once); idempotent.
        If WildDuck does not answer, the user is recorded as an orphan (the watcher
        deletes it later) and the failure raised: deleting an inbox then fails as a
        whole, and the record goes with that rollback; after a rolled-back creation
        (no transaction open) the record stays."""
        row = WildDuckMailbox.get_or_none(WildDuckMailbox.inbox == inbox.inbox_id)
        user = row.user_id if row else self._made.pop(inbox.inbox_id, None)
        try:
            if user is None:
                user = self._user_to_delete(inbox)
            if user is not None:
                self.api.delete_user(user)
        except BackendError:
            if user is not None:
                _remember_orphan(user, inbox.address)
            raise
        WildDuckMailbox.delete().where(WildDuckMailbox.inbox == inbox.inbox_id).execute()
        log.info("deprovisioned %s (WildDuck user %s)", inbox.inbox_id, user)

    def services(self, postern) -> list[Service]:
        from postern.plugins.wildduck.watcher import run_watcher

        services = [Service("wildduck-watcher", run_watcher, "follows WildDuck for new mail and ingests it")]
        if self.options.smtp_bind:
            from postern.plugins.wildduck.frontdoor import run_front_door

            services.append(
                Service("smtp", run_front_door, "SMTP listener handing mail to WildDuck over LMTP", notifies_ready=True)
            )
        return services

    def listens(self) -> list[Listen]:
        o = self.options
        return [Listen("SMTP front door", o.smtp_bind, tls_cert=o.tls_cert, tls_key=o.tls_key)] if o.smtp_bind else []

    def probe(self, postern, timeout: float) -> list[Finding]:
        """WildDuck's API answers a listing of one user with our access token, and its
        LMTP port greets and takes LHLO; nothing is delivered or changed."""
        from postern.core.doctor import probes

        o = self.options
        timeout = min(timeout, o.timeout_seconds)
        headers = {"X-Access-Token": o.access_token} if o.access_token else {}
        return [
            probes.http(
                "receive.wildduck.api",
                "WildDuck API",
                f"{o.api_url.rstrip('/')}/users?limit=1",
                fix="start WildDuck, or fix [receive.wildduck] api_url and access_token",
                timeout=timeout,
                headers=headers,
            ),
            probes.smtp(
                "receive.wildduck.lmtp",
                "WildDuck LMTP",
                o.lmtp_host,
                o.lmtp_port,
                fix="start WildDuck's LMTP server, or fix [receive.wildduck] lmtp_host and lmtp_port",
                timeout=timeout,
                lmtp=True,
            ),
        ]

    def dns_records(self, postern, domain: str) -> list[DnsRecord]:
        """With ``mx_host`` set, an operator's MX sits in front of WildDuck: publish it
        preferred (5) over the core's own MX (10), which stays as the fallback."""
        if not self.options.mx_host:
            return []
        mx = f"5 {self.options.mx_host.rstrip('.')}"
        return [DnsRecord(domain, "MX", mx), DnsRecord(f"*.{domain}", "MX", mx)]

    def message_sent(self, postern, message, result) -> None:
        """Put the agent's sent message in the mailbox's Sent folder, so a human reading
        over IMAP sees both sides of every thread."""
        from postern.plugins.wildduck.sent import append_sent

        append_sent(postern, message)

    def _remember_made(self, inbox_id: str, user: str) -> None:
        self._made[inbox_id] = user
        while len(self._made) > MADE_REMEMBERED:
            self._made.popitem(last=False)  # long committed: a rollback follows at once or never

    def _user_to_delete(self, inbox: InboxRef) -> str | None:
        """The user of an inbox whose ``wildduck_mailbox`` row is gone with it. The core
        calls ``deprovision`` inside the transaction that deletes an inbox (the row went
        by cascade: the user holding the address is the inbox's, made or reused), and
        outside any transaction after a creation rolled back (then only a user made for
        this inbox is Postern's to delete, not one that held the address before)."""
        if database.in_transaction():
            return self.api.user_of_address(inbox.address)
        return self.api.user_of_username(username_for(inbox.inbox_id))

    def deliver_local(self, postern, message, recipients: list[str]) -> bool:
        """Agent-to-agent mail goes through WildDuck's LMTP like any other, so it is in
        the recipient's IMAP INBOX and the watcher ingests it once (postern.core.mail.outbound)."""
        from postern.plugins.wildduck.local import deliver_local

        deliver_local(postern, self, message, recipients)
        return True


@contextmanager
def _deleted_on_failure(receiver: WildDuckReceiver, inbox: InboxRef, user: str):
    """Whatever fails after WildDuck made ``user`` deletes it again. If that delete fails
    too, the user stays in ``receiver._made`` for ``deprovision``, which the core calls
    once the inbox's transaction has rolled back and which records the orphan then (a
    record written now would roll back with the inbox)."""
    try:
        yield
    except BaseException:
        try:
            receiver.api.delete_user(user)
            receiver._made.pop(inbox.inbox_id, None)
        except BackendError as exc:
            log.warning("could not delete WildDuck user %s of failed inbox %s: %s", user, inbox.inbox_id, exc)
        raise


def _record(api, inbox_id: str, user: str, *, existing: bool) -> None:
    folders = api.mailboxes(user)
    if "INBOX" not in folders:
        raise PermanentFailure("WildDuck user has no INBOX", code="wildduck_no_inbox")
    newest = api.newest_received(user, folders["INBOX"]) if existing else None
    _upsert(inbox_id, user, folders, newest)


def _remember_orphan(user: str, address: str) -> None:
    with write_transaction():
        WildDuckOrphan.insert(user_id=user, address=address).on_conflict_ignore().execute()


def username_for(inbox_id: str) -> str:
    """WildDuck usernames are lower-case; Postern's ids are not, so hash rather than fold."""
    return "postern-" + hashlib.sha256(inbox_id.encode()).hexdigest()[:24]


def _upsert(inbox_id: str, user: str, folders: dict[str, str], newest) -> None:
    """``newest``: the receive time of the newest message a reused user already holds;
    only mail received after it is the inbox's."""
    WildDuckMailbox.delete().where(WildDuckMailbox.inbox == inbox_id).execute()
    WildDuckMailbox.create(
        inbox=inbox_id,
        user_id=user,
        inbox_mailbox=folders["INBOX"],
        sent_mailbox=folders.get("\\Sent"),
        ingest_from=newest + dt.timedelta(milliseconds=1) if newest else None,
        seen_until=newest,
    )
