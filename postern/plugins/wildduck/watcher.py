"""The watcher: follows WildDuck for newly received messages and feeds each one through
the core's ingest exactly once.

One Redis subscription to WildDuck's own ``wd_events`` channel (the channel WildDuck's
IMAP servers use to learn of journal changes, ``{"e": "<user id>"}``) is a doorbell for
every user at once; a ring makes the watcher list that user's recently received mail.
The doorbell is never the data: a sweep of every mailbox at start and every
``sweep_seconds`` catches anything a lost ring (or a stopped watcher) missed.

What is followed: INBOX and every folder a person may file mail into over IMAP (all
but Sent, Drafts, Junk and Trash), by WildDuck's receive time (``idate``), so a message
moved out of INBOX before the watcher saw it is found in its new folder. Each listing
re-reads ``OVERLAP`` before the newest receive time already seen, which also covers two
deliveries whose inserts finished out of order.

Exactly once: a message's key (Message-ID, receive time, size: what a move keeps) is
recorded in ``wildduck_seen`` in the same transaction that stores it; the key is the
primary key, so a second watcher racing on the same message fails its insert and rolls
back, and a crash before the commit leaves neither the key nor the message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

import peewee

from postern.core.backends import TemporaryFailure
from postern.core.db import database, write_transaction
from postern.core.ids import well_formed
from postern.core.mail.authresults import our_note, stamp
from postern.core.mail.ingest import announce, limits_for, local_inbox, readable, store
from postern.core.mail.mime import MailRejected, first_msgid, parse
from postern.core.mail.verdicts import authserv_id_for
from postern.core.models import utcnow
from postern.plugins.wildduck.api import MessageSummary
from postern.plugins.wildduck.models import WildDuckMailbox, WildDuckSeen, WildDuckVerdict
from postern.plugins.wildduck.orphans import delete_orphans
from postern.plugins.wildduck.sent import append_due, next_due

log = logging.getLogger("postern.wildduck.watcher")

#: After a ring, rings already received are taken with it (no waiting for more: rings
#: that arrive while a batch is being read queue up and form the next batch), for at
#: most this long, so a steady stream of rings cannot starve the reading.
MAX_BATCH_SECONDS = 0.2

#: How far before the newest receive time seen each listing starts again. WildDuck
#: stamps ``idate`` before it inserts, so a slow insert can appear after a later one;
#: keys of this window (and as much again) are kept to recognise what was stored.
OVERLAP = dt.timedelta(minutes=5)

#: How often the loop looks for Sent copies that became due (one indexed query).
DUE_POLL_SECONDS = 5.0


class _AlreadyStored(Exception):
    """The message's key is recorded: another watcher (or an earlier round) stored it."""


def catch_up(postern, api, row: WildDuckMailbox, folders: dict[str, int] | None = None) -> int:
    """Ingest every message received since ``row``'s watermark (less ``OVERLAP``) in the
    folders followed, oldest first; returns how many were stored. Raises
    ``TemporaryFailure`` when WildDuck does not answer. ``folders`` (from
    ``api.inbound_folders``) are looked up when not given: a person may have just made
    one and filed mail into it."""
    if folders is None:
        folders = api.inbound_folders(row.user_id)
    if folders is None:
        log.warning("WildDuck user %s of inbox %s is gone; nothing to follow", row.user_id, row.inbox_id)
        return 0
    since = row.seen_until - OVERLAP if row.seen_until else row.ingest_from
    found: list[MessageSummary] = []
    for folder in folders:
        found.extend(api.received_since(row.user_id, folder, since) or [])
    found.sort(key=lambda m: (m.received_at, m.mailbox, m.uid))
    done = _seen_keys(row.inbox_id, {m.key for m in found})
    stored = 0
    newest = row.seen_until
    for summary in found:
        if summary.key not in done and not (row.ingest_from and summary.received_at < row.ingest_from):
            raw = api.raw_message(row.user_id, summary.mailbox, summary.uid)
            if raw is None:
                # Moved or deleted since the listing: the next round finds it where it went,
                # so the watermark must not pass it.
                break
            try:
                if _ingest_one(postern, row.inbox_id, summary, raw):
                    stored += 1
            except _AlreadyStored:
                log.info("inbox %s: another watcher stored %s first", row.inbox_id, summary.key[:12])
            done.add(summary.key)
        newest = max(newest, summary.received_at) if newest else summary.received_at
    if newest != row.seen_until:
        _advance(row, newest)
    return stored


def _seen_keys(inbox_id: str, keys: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):  # stay under every database's parameter limit
        chunk = ordered[start : start + 500]
        query = WildDuckSeen.select(WildDuckSeen.key).where(
            (WildDuckSeen.inbox == inbox_id) & (WildDuckSeen.key.in_(chunk))
        )
        found.update(row.key for row in query)
    return found


def _advance(row: WildDuckMailbox, newest: dt.datetime) -> None:
    """Move the watermark forward (never back: a slower watcher may run behind) and
    forget keys too old for any listing to meet again."""
    with write_transaction():
        WildDuckMailbox.update(seen_until=newest).where(
            (WildDuckMailbox.inbox == row.inbox_id)
            & ((WildDuckMailbox.seen_until.is_null()) | (WildDuckMailbox.seen_until < newest))
        ).execute()
        WildDuckSeen.delete().where(
            (WildDuckSeen.inbox == row.inbox_id) & (WildDuckSeen.received_at < newest - 2 * OVERLAP)
        ).execute()
    row.seen_until = newest


def _ingest_one(postern, inbox_id: str, summary: MessageSummary, raw: bytes) -> bool:
    parsed = None
    raw, authentication, tls = verdict_of(postern, raw)
    try:
        parsed = parse(raw, limits_for(postern))
    except MailRejected as exc:
        # WildDuck accepted it but Postern's limits refuse it: step over it rather than
        # retry it for ever. The human can still see it over IMAP.
        log.warning("inbox %s: WildDuck message %s refused by Postern's limits: %s", inbox_id, summary.uid, exc.message)
    inbox = None
    try:
        with write_transaction():
            WildDuckSeen.insert(inbox=inbox_id, key=summary.key, received_at=summary.received_at).execute()
            if parsed is not None:
                inbox = _inbox(inbox_id)
                if inbox is not None:
                    sender = _return_path(raw)
                    reading = dataclasses.replace(readable(postern, parsed, sender), authentication=authentication)
                    known = {inbox.address: inbox}
                    messages = store(postern, parsed, raw, sender, [inbox.address], known, None, reading, tls)
    except peewee.IntegrityError:
        raise _AlreadyStored() from None
    if inbox is None:
        return False
    announce(postern, messages)
    return True


def verdict_of(postern, raw: bytes) -> tuple[bytes, str, str | None]:
    """The verdict the front door recorded for ``raw`` (named in its Authentication-Results
    under Postern's authserv-id, and made for a message with this Message-ID and From) as
    (raw, verdict JSON, TLS). Mail that reached WildDuck some other way has none: any
    Authentication-Results claiming Postern's authserv-id in it is forged, and taken out
    (RFC 8601 5)."""
    authserv_id = authserv_id_for(postern)
    note = our_note(raw, authserv_id) or ""
    verdict_id = note.removeprefix("verdict ").strip()
    row = WildDuckVerdict.get_or_none(WildDuckVerdict.id == verdict_id) if well_formed(verdict_id, "vrd") else None
    if row is not None and _made_for(row, raw):
        return raw, row.authentication, row.tls
    return stamp(raw, None, authserv_id), "", None


def _made_for(row: WildDuckVerdict, raw: bytes) -> bool:
    headers = BytesHeaderParser().parsebytes(raw[:65536])
    froms = headers.get_all("From") or []
    addresses = getaddresses([str(v) for v in froms])
    sender = addresses[0][1].lower() if len(froms) == 1 and len(addresses) == 1 else ""
    return sender == row.from_address.lower() and (first_msgid(headers.get("Message-ID")) or "") == row.message_id


def _inbox(inbox_id: str):
    from postern.core.models import Inbox

    row = Inbox.get_or_none(Inbox.id == inbox_id)
    return local_inbox(row.address) if row else None


def _return_path(raw: bytes) -> str:
    """WildDuck's LMTP server records the envelope sender as ``Return-Path``."""
    headers = BytesHeaderParser().parsebytes(raw[:65536])
    return parseaddr(str(headers.get("Return-Path", "")))[1]


class Unchanged:
    """What the sweep saw of each user's folders (their ``modifyIndex``es) when it last
    listed them. A mailbox whose folders show the same since costs the sweep one request
    instead of one per folder. At least every ``FULL_SWEEP_SECONDS`` a mailbox is listed
    anyway: WildDuck raises ``modifyIndex`` when it takes a UID, a moment before the
    message is visible, so a listing in that moment would otherwise hide it for good
    from the sweeps (its ring still brings it)."""

    FULL_SWEEP_SECONDS = 3600.0

    def __init__(self):
        self.seen: dict[str, tuple[tuple, float]] = {}

    def skip(self, user: str, folders: dict[str, int]) -> bool:
        state = tuple(sorted(folders.items()))
        before = self.seen.get(user)
        return before is not None and before[0] == state and time.monotonic() - before[1] < self.FULL_SWEEP_SECONDS

    def listed(self, user: str, folders: dict[str, int]) -> None:
        self.seen[user] = (tuple(sorted(folders.items())), time.monotonic())


def sweep(postern, api, unchanged: Unchanged | None = None) -> int:
    """Catch up every provisioned mailbox (skipping those ``unchanged`` since the last
    sweep); one failing mailbox does not stop the rest. Then the plugin's other deferred
    work: Sent copies due, orphaned users to delete."""
    stored = 0
    for row in list(WildDuckMailbox.select()):
        try:
            folders = api.inbound_folders(row.user_id)
            if folders is not None and unchanged is not None and unchanged.skip(row.user_id, folders):
                continue
            stored += catch_up(postern, api, row, folders)
            if folders is not None and unchanged is not None:
                unchanged.listed(row.user_id, folders)
        except TemporaryFailure as exc:
            log.warning("sweep: inbox %s not caught up: %s", row.inbox_id, exc)
    append_due(postern)
    delete_orphans(api)
    forget_verdicts()
    return stored


#: How long a front-door verdict waits for the watcher: far longer than any ingest takes,
#: as long as a stopped watcher may take to come back and catch up.
VERDICT_KEPT = dt.timedelta(days=7)


def forget_verdicts() -> None:
    with write_transaction():
        WildDuckVerdict.delete().where(WildDuckVerdict.created_at < utcnow() - VERDICT_KEPT).execute()


def run_watcher(postern) -> None:
    """Service entry point (``postern service run wildduck-watcher``): runs until SIGTERM
    (the default action is right: every ingest is one transaction)."""
    receiver = postern.backend("receive")
    api = receiver.api
    bell = _Doorbell(receiver.options.redis_url) if receiver.options.redis_url else None
    log.info(
        "watching WildDuck at %s (doorbell: %s, sweep every %ss)",
        receiver.options.api_url,
        "redis wd_events" if bell else "none",
        receiver.options.sweep_seconds,
    )
    next_sweep = 0.0
    unchanged = Unchanged()
    while True:
        with database.connection_context():
            # Subscribe before sweeping: a message that lands during the sweep rings
            # afterwards, and one that landed before it is found by it.
            if bell is not None and bell.ensure_subscribed():
                next_sweep = 0.0  # (re)subscribed: rings may have been missed meanwhile
            if time.monotonic() >= next_sweep:
                try:
                    sweep(postern, api, unchanged)
                    next_sweep = time.monotonic() + receiver.options.sweep_seconds
                except Exception:
                    log.exception("sweep failed; retrying in 5 s")
                    next_sweep = time.monotonic() + 5
            append_due(postern)  # Sent copies whose retry time has come (one query when none is)
            pause = max(0.0, min(next_sweep, _next_due_at()) - time.monotonic())
            if bell is None:
                time.sleep(pause)
                continue
            users = bell.wait(pause)
            if users:
                log.debug("WildDuck rang for users %s", sorted(users))
            for user in users:
                row = WildDuckMailbox.get_or_none(WildDuckMailbox.user_id == user)
                if row is None:
                    continue  # not one of ours
                try:
                    stored = catch_up(postern, api, row)
                    log.debug("inbox %s: %s new message(s) up to %s", row.inbox_id, stored, row.seen_until)
                except TemporaryFailure as exc:
                    log.warning("inbox %s not caught up after a ring: %s; the sweep will", row.inbox_id, exc)


def _next_due_at() -> float:
    """``time.monotonic()`` of the next look at Sent copies due: the earliest retry (at
    least a second away), and never more than ``DUE_POLL_SECONDS`` away, since the API
    processes that record new ones cannot ring this loop."""
    due = next_due()
    poll = time.monotonic() + DUE_POLL_SECONDS
    if due is None:
        return poll
    return min(poll, time.monotonic() + max(1.0, (due - utcnow()).total_seconds()))


class _Doorbell:
    """WildDuck's ``wd_events`` Redis channel: which users' journals changed."""

    CHANNEL = "wd_events"

    def __init__(self, url: str):
        import redis

        self.url = url
        self.redis = redis
        self.client = None
        self.pubsub = None

    def ensure_subscribed(self) -> bool:
        """Subscribe if not subscribed; True when a new subscription was made (the
        caller sweeps, since rings before it are lost), False when already subscribed
        or when Redis does not answer (then sweeps carry on alone)."""
        if self.pubsub is not None:
            return False
        try:
            client = self.redis.Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.CHANNEL)
            pubsub.get_message(timeout=5)  # the confirmation: subscribed from here on
        except self.redis.RedisError as exc:
            log.warning("WildDuck's Redis doorbell unavailable (%s); relying on sweeps until it returns", exc)
            time.sleep(1)
            return False
        # The client must live as long as its subscription: when it is collected it
        # closes its connection pool, and with it the subscription's connection (redis-py
        # re-subscribes at the next read, and every ring in between is lost).
        self.client, self.pubsub = client, pubsub
        return True

    def wait(self, timeout: float) -> set[str]:
        """User ids rung within ``timeout`` seconds (empty on timeout or when the
        subscription dropped; ``ensure_subscribed`` then opens a new one)."""
        users: set[str] = set()
        if self.pubsub is None:
            time.sleep(min(timeout, 1.0))
            return users
        try:
            message = self.pubsub.get_message(timeout=timeout)
            until = time.monotonic() + MAX_BATCH_SECONDS
            while message is not None:
                # A ring taken off the subscription is counted before the batch may end:
                # one dropped here is mail no later ring brings (a real CI flake).
                user = _user_of(message.get("data"))
                if user:
                    users.add(user)
                if time.monotonic() >= until:
                    break
                message = self.pubsub.get_message(timeout=0)
        except self.redis.RedisError as exc:
            log.warning("WildDuck's Redis doorbell dropped (%s); resubscribing", exc)
            self.client = self.pubsub = None
        return users


def _user_of(data) -> str | None:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if not isinstance(data, str):
        return None
    try:
        event = json.loads(data)
    except ValueError:
        return None
    user = event.get("e") if isinstance(event, dict) else None
    return user if isinstance(user, str) and len(user) == 24 else None
