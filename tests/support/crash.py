"""Crash consistency: real clients push work into a real ``postern serve`` while parts
of it are killed with SIGKILL at random moments, then every acknowledged item is
checked against the database, the API, an SMTP sink or a webhook receiver.

Shared by tests/test_crash_consistency.py (a few kills, CI) and
bench/crash_consistency.py (20 kills per scenario, figures). Each scenario returns a
``Row``: what the clients were told was accepted, and what became of it.

- ``smtp_listener``: smtplib clients; the SMTP service process is killed and the
  supervisor restarts it.
- ``smtp_processes``: as ``smtp_listener`` with ``[receive.smtp_local] processes = 2``;
  a forked listener process is killed and replaced, and every third kill takes the
  service process itself (its children must die with it).
- ``whole_serve``: smtplib clients; the whole ``postern serve`` tree is killed at once
  and started again.
- ``api_sends``: HTTP clients POST sends relayed to a real aiosmtpd sink; the whole
  tree is killed and started again.
- ``webhooks``: smtplib clients make ``message.received`` events; the webhook
  dispatcher process is killed and the supervisor restarts it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import random
import re
import secrets
import signal
import smtplib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from postern.core import migrations
from postern.core.db import database, open_database
from support.receiver import Receiver
from support.server import Server, crash_tree, free_port, wait_for
from support.world import make_tenant

SCENARIOS = ("smtp_listener", "smtp_processes", "whole_serve", "api_sends", "webhooks")
TAG = re.compile(rb"^X-Crash-Tag: (\S+)\r?$", re.MULTILINE)
FINAL = ("sent", "failed")
#: Seconds to wait for a restarted part to take work again before the run fails.
RESTART_TIMEOUT = 90.0


@dataclass
class Row:
    """One scenario's outcome; see bench/README.md for what each column means."""

    scenario: str
    database: str
    kills: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    altered: int = 0
    stored_cut: int | None = 0  # None: the column means nothing for this scenario
    notes: dict[str, int] = field(default_factory=dict)
    #: What was wrong with each lost or altered item found, for the report (a few).
    findings: list[str] = field(default_factory=list)

    def found(self, text: str) -> None:
        if len(self.findings) < 20:
            self.findings.append(text)

    @property
    def broken(self) -> int:
        """What the guarantees forbid: anything lost or altered, and duplicates where
        delivery is exactly-once (SMTP). Sends and webhooks are at-least-once."""
        dup = self.duplicated if self.scenario in ("smtp_listener", "smtp_processes", "whole_serve") else 0
        forbidden = (
            "stuck",
            "unreadable",
            "stored twice",
            "stored, never sent",
            "relayed twice without a kill between",
        )
        notes = sum(self.notes.get(k, 0) for k in forbidden)
        return self.lost + self.altered + dup + notes


@dataclass
class Knobs:
    kills: int = 3
    clients: int = 3
    #: Seconds each client pauses between two items: bounds the load and the checks.
    pace: float = 0.02
    #: Random wait, in seconds, between a part being back at work and the next kill.
    gap: tuple[float, float] = (0.3, 2.0)
    #: Messages whose raw bytes are also fetched through the API (download link).
    raw_sample: int = 20
    seed: int | None = None


# ---- the Postern under test -----------------------------------------------------------


class Deployment:
    """A migrated database with one tenant, an agent key and inboxes, and the
    ``postern serve`` that uses it (restartable on the same ports)."""

    def __init__(
        self, db_url: str, tmp_path: Path, inboxes: int = 2, env: dict | None = None, config=None, smtp_options=""
    ):
        self.db_url = db_url
        open_database(db_url)
        with database.connection_context():
            migrations.upgrade()
            enrolled = make_tenant("crash").agent_key(handle="crash", max_mailboxes=inboxes + 1)
        self.key = enrolled.agent_key
        self.server = Server(
            {
                "POSTERN_DATA_DIR": str(tmp_path / "data"),
                "POSTERN_DATABASE_URL": db_url,
                # Byte-exact means as sent: sender verification would add its
                # Authentication-Results header to every stored copy (and ask the
                # machine's resolver about every sender); durability is measured here.
                "POSTERN_TRUST_VERIFY": "false",
                # A killed child comes back after 1 s however often it was killed: the
                # scenarios kill it more often than the default backoff would allow.
                "POSTERN_SERVER_RESTART_BACKOFF_MAX": "1",
                "POSTERN_SERVER_GRACEFUL_TIMEOUT": "3",
                # Clients here send as fast as they can on purpose (durability under load),
                # far past any sending limit a real agent is held to.
                "POSTERN_LIMITS_ENABLED": "false",
                **(env or {}),
            },
            tmp_path,
            config=config or (lambda server: ""),
            smtp_options=smtp_options,
        )
        self.inboxes = []
        try:
            self.wait_ready()
            for i in range(inboxes):
                resp = self.api("POST", "/v1/inboxes", json={"username": f"crash{i}"})
                assert resp.status_code == 201, resp.text
                self.inboxes.append(resp.json())
        except BaseException:
            self.close()  # no server left behind by a start that failed
            raise

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, self.server.url + path, headers=self.headers, timeout=30, **kwargs)

    def service_pid(self, name: str) -> int | None:
        """The pid of ``postern service run NAME`` under this serve, if it runs (the
        supervisor's child, not a process that service forked)."""
        try:
            children = psutil.Process(self.server.proc.pid).children()
        except psutil.NoSuchProcess:
            return None
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.cmdline()[-3:] == ["service", "run", name] and child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
        return None

    def wait_ready(self, services=("smtp",)) -> None:
        """Until the API answers and each named service runs (SMTP: greets)."""

        def ready():
            if self.server.proc.poll() is not None:
                raise AssertionError(f"postern serve exited:\n{self.server.output()[-3000:]}")
            health = self.server.health()
            if not health or not all(self.service_pid(name) for name in services):
                return False
            return "smtp" not in services or smtp_greets(self.server.smtp_port)

        wait_for(ready, timeout=RESTART_TIMEOUT, interval=0.05)

    def restart(self) -> None:
        crash_tree(self.server)
        self.server.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.stop(timeout=30)
        if self.server.proc.poll() is None:
            crash_tree(self.server)
        database.close()

    # -- reading back -------------------------------------------------------------
    def api_pages(self, path: str) -> list[dict]:
        items, token = [], None
        while True:
            params = {"limit": 200, **({"page_token": token} if token else {})}
            resp = self.api("GET", path, params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            items += body["data"]
            token = body.get("next_page_token")
            if not token:
                return items

    def raw_through_api(self, inbox_id: str, message_id: str) -> bytes:
        link = self.api("POST", f"/v1/inboxes/{inbox_id}/messages/{message_id}/raw-link")
        assert link.status_code == 201, link.text
        # Without server.public_url, links are relative to the API root.
        resp = httpx.get(httpx.URL(self.server.url).join(link.json()["url"]), timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.content


def smtp_greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


# ---- clients ----------------------------------------------------------------------------


def tagged_message(tag: str, to: str, rng: random.Random) -> bytes:
    """A message whose bytes are unique and exactly what the listener must store: CRLF
    line ends (smtplib sends nothing else), a dot-led line (dot-stuffed on the wire),
    8-bit-free random content of random size."""
    lines = [base64.b64encode(rng.randbytes(57)).decode() for _ in range(rng.randint(1, 60))]
    body = "\r\n".join([f"crash test {tag}", ".a line that starts with a dot", *lines])
    return (
        f"From: Crash Client <client@crash.example>\r\nTo: {to}\r\nSubject: crash {tag}\r\n"
        f"Message-ID: <{tag}@crash.example>\r\nX-Crash-Tag: {tag}\r\n\r\n{body}\r\n"
    ).encode()


class Clients:
    """Threads that each send items one after the other until stopped; every item has
    a tag of its own and lands in ``acked`` (the server said it took it) or ``cut``
    (offered, but refused, dropped or unanswered); one that never reached the server
    (nothing listening) is not an attempt. Nothing is retried under
    the same tag, so any second copy in the store is Postern's doing."""

    def __init__(self, count: int, pace: float, send_one, max_items: int = 20000):
        self.acked: dict[str, object] = {}
        self.cut: dict[str, object] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_items = max_items
        self.threads = [
            threading.Thread(target=self._loop, args=(i, pace, send_one), daemon=True) for i in range(count)
        ]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _loop(self, index: int, pace: float, send_one) -> None:
        rng = random.Random(f"{index}-{secrets.token_hex(4)}")
        state: dict = {}
        n = 0
        while not self.stop.is_set() and len(self.acked) + len(self.cut) < self.max_items:
            tag = f"c{index}n{n}x{secrets.token_hex(3)}"
            n += 1
            ok, item = send_one(state, tag, rng)
            if ok is None:  # never reached the server (it is down): not an attempt
                time.sleep(0.05)
                continue
            with self.lock:
                (self.acked if ok else self.cut)[tag] = item
            if not ok:
                time.sleep(0.05)  # the server is down: do not spin
            elif pace:
                time.sleep(pace)


@dataclass(frozen=True)
class Mail:
    """One message a client offered over SMTP: its bytes and the inboxes it went to."""

    raw: bytes
    inbox_ids: frozenset[str]


def smtp_sender(port: int, inboxes: list[dict]):
    """``send_one`` for ``Clients``: one message over a kept-alive smtplib connection,
    to one inbox, or (one in five) to two: stored for both in one transaction or not at all."""

    def send_one(state: dict, tag: str, rng: random.Random):
        to = rng.sample(inboxes, 2) if len(inboxes) > 1 and rng.random() < 0.2 else [rng.choice(inboxes)]
        mail = Mail(tagged_message(tag, ", ".join(i["address"] for i in to), rng), frozenset(i["id"] for i in to))
        if state.get("smtp") is None:
            try:
                state["smtp"] = smtplib.SMTP("127.0.0.1", port, timeout=15)
            except (OSError, smtplib.SMTPException):
                return None, mail  # no session: the message was never offered
        try:
            refused = state["smtp"].sendmail("client@crash.example", [i["address"] for i in to], mail.raw)
            # RCPT may refuse one of two (a 4xx) and DATA still take it for the other:
            # acknowledged for that one only (all refused raises, and is a cut).
            accepted = frozenset(i["id"] for i in to if i["address"] not in refused)
            return True, Mail(mail.raw, accepted)
        except (OSError, smtplib.SMTPException):
            with contextlib.suppress(Exception):
                state["smtp"].close()
            state["smtp"] = None
            return False, mail

    return send_one


def api_sender(deployment: Deployment, inbox: dict):
    """``send_one`` for ``Clients``: one send through the API to an outside address,
    with the tag as its ``Idempotency-Key`` so a cut send can be retried safely."""

    def send_one(state: dict, tag: str, rng: random.Random):
        if state.get("http") is None:
            state["http"] = httpx.Client(base_url=deployment.server.url, headers=deployment.headers, timeout=30)
        try:
            resp = post_send(state["http"], inbox, tag)
        except httpx.ConnectError:
            return None, None  # nothing listening: the send was never offered
        except httpx.HTTPError:
            state["http"].close()
            state["http"] = None
            return False, None
        if resp.status_code in (200, 201):
            return True, resp.json()
        return False, resp.status_code

    return send_one


def post_send(http: httpx.Client, inbox: dict, tag: str) -> httpx.Response:
    body = {
        "to": [f"{tag}@remote.example"],
        "subject": f"crash {tag}",
        "text": f"send {tag}\n",
        "headers": {"X-Crash-Tag": tag},
    }
    return http.post(f"/v1/inboxes/{inbox['id']}/messages", json=body, headers={"Idempotency-Key": tag})


# ---- killing ---------------------------------------------------------------------------


class Killer:
    """Kills at random moments: waits until the part is back at work, then a random
    gap, then ``kill()``; ``kills`` times."""

    def __init__(self, knobs: Knobs, kill, back_at_work):
        self.knobs = knobs
        self.kill = kill
        self.back_at_work = back_at_work
        self.rng = random.Random(knobs.seed)
        self.done = 0
        #: (before, after) each kill, in time.monotonic(): the process may still act for a
        #: moment after ``before``, until the signal lands.
        self.killed_at: list[tuple[float, float]] = []

    def run(self) -> None:
        for _ in range(self.knobs.kills):
            self.back_at_work()
            time.sleep(self.rng.uniform(*self.knobs.gap))
            before = time.monotonic()
            self.kill()
            self.killed_at.append((before, time.monotonic()))
            self.done += 1
        self.back_at_work()


def kill_service(deployment: Deployment, name: str):
    def kill():
        pid = deployment.service_pid(name)
        assert pid, f"no {name} service to kill"
        os.kill(pid, signal.SIGKILL)
        # Back at work means a new process, not the one just killed still being reaped.
        wait_for(lambda: deployment.service_pid(name) not in (None, pid), timeout=RESTART_TIMEOUT, interval=0.05)

    return kill


# ---- scenarios -------------------------------------------------------------------------


def kill_listener_process(deployment: Deployment, processes: int):
    """Kill one forked SMTP listener process, or (every third time) the service that
    forked them, and wait until ``processes`` live listeners serve again."""
    kills = 0

    def listeners() -> tuple[int | None, list[int]]:
        parent = deployment.service_pid("smtp")
        if parent is None:
            return None, []
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(parent).children()
            return parent, [k.pid for k in kids if k.status() != psutil.STATUS_ZOMBIE]
        return parent, []

    def kill():
        nonlocal kills
        kills += 1
        parent, kids = listeners()
        assert parent and kids, "no SMTP listener processes to kill"
        victim = parent if kills % 3 == 0 else random.choice(kids)
        os.kill(victim, signal.SIGKILL)

        def back():
            now_parent, now_kids = listeners()
            return now_parent and len(now_kids) == processes and victim not in (now_parent, *now_kids)

        wait_for(back, timeout=RESTART_TIMEOUT, interval=0.05)

    return kill


def run(scenario: str, db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    return {
        "smtp_listener": smtp_listener,
        "smtp_processes": smtp_processes,
        "whole_serve": whole_serve,
        "api_sends": api_sends,
        "webhooks": webhooks,
    }[scenario](db_url, tmp_path, knobs)


@contextlib.contextmanager
def scratch_database(url: str | None, tmp_path: Path):
    """A fresh, empty database for one scenario: a SQLite file under ``tmp_path`` (no
    ``url``, or a ``sqlite:`` one naming a directory), or a new schema in the
    PostgreSQL database ``url`` names, dropped afterwards (as tests/conftest.py does)."""
    if not url or url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/postern.db"
        return
    import psycopg2

    schema = "crash_" + secrets.token_hex(6)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        database.close()
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def database_name(db_url: str) -> str:
    return "postgresql" if db_url.startswith("postgres") else "sqlite"


def smtp_listener(db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    return _smtp_scenario("smtp_listener", db_url, tmp_path, knobs, whole=False)


def smtp_processes(db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    return _smtp_scenario("smtp_processes", db_url, tmp_path, knobs, whole=False, processes=2)


def whole_serve(db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    return _smtp_scenario("whole_serve", db_url, tmp_path, knobs, whole=True)


def _smtp_scenario(name: str, db_url: str, tmp_path: Path, knobs: Knobs, *, whole: bool, processes: int = 1) -> Row:
    deployment = Deployment(db_url, tmp_path, smtp_options=f"processes = {processes}\n")
    try:
        if whole:
            kill = deployment.restart
        elif processes > 1:
            kill = kill_listener_process(deployment, processes)
        else:
            kill = kill_service(deployment, "smtp")
        killer = Killer(knobs, kill, deployment.wait_ready)
        sender = smtp_sender(deployment.server.smtp_port, deployment.inboxes)
        with Clients(knobs.clients, knobs.pace, sender) as clients:
            killer.run()
        deployment.wait_ready()
        row = Row(name, database_name(db_url), kills=killer.done)
        check_stored(deployment, clients, row, knobs)
        return row
    finally:
        deployment.close()


def check_stored(deployment: Deployment, clients: Clients, row: Row, knobs: Knobs) -> None:
    """Every acknowledged message stored once, byte for byte, and listed by the API."""
    from postern.core.models import Message

    stored: dict[str, list] = {}
    with database.connection_context():
        for message in Message.select(Message.id, Message.inbox, Message.raw).where(Message.direction == "inbound"):
            raw = bytes(message.raw)
            found = TAG.search(raw)
            tag = found.group(1).decode() if found else "?"
            stored.setdefault(tag, []).append((message.id, message.inbox_id, raw))
    row.acknowledged = len(clients.acked)
    for tag, sent in clients.acked.items():
        copies = stored.get(tag, [])
        per_inbox = Counter(inbox_id for _, inbox_id, _ in copies)
        row.lost += any(not per_inbox[i] for i in sent.inbox_ids)
        row.duplicated += any(n > 1 for n in per_inbox.values())
        row.altered += any(raw != sent.raw for _, _, raw in copies) or not set(per_inbox) <= sent.inbox_ids
        if per_inbox != Counter(sent.inbox_ids) or any(raw != sent.raw for _, _, raw in copies):
            sizes = [len(raw) for _, _, raw in copies]
            row.found(
                f"SMTP {tag}: acknowledged for {len(sent.inbox_ids)} inbox(es), {len(sent.raw)} bytes; "
                f"stored {sum(per_inbox.values())} copies of {sizes} bytes"
            )
    row.stored_cut = sum(tag in stored for tag in clients.cut)
    row.notes["cut"] = len(clients.cut)
    # One transaction stores a message for all its recipients: a kill never splits it.
    split = [t for t, m in {**clients.acked, **clients.cut}.items() if t in stored and _split(stored[t], m)]
    if split:
        row.notes["stored for only some recipients"] = len(split)
        row.found(f"SMTP {split[0]}: stored for only some of its recipients")
    strangers = set(stored) - set(clients.acked) - set(clients.cut)
    if strangers:
        row.notes["stored, never sent"] = len(strangers)

    listed = Counter()
    for inbox in deployment.inboxes:
        for summary in deployment.api_pages(f"/v1/inboxes/{inbox['id']}/messages"):
            listed[summary["id"]] += 1
    row.notes["unreadable"] = sum(
        1 for tag in clients.acked if any(listed[mid] != 1 for mid, _, _ in stored.get(tag, []))
    )
    rng = random.Random(knobs.seed)
    sample = rng.sample(sorted(clients.acked), min(knobs.raw_sample, len(clients.acked)))
    for tag in sample:
        for mid, inbox_id, _ in stored.get(tag, [])[:1]:
            through_api = deployment.raw_through_api(inbox_id, mid)
            if through_api != clients.acked[tag].raw:
                row.altered += 1
                row.found(f"SMTP {tag}: raw download of {mid} differs from what was sent")


def _split(copies: list, mail: Mail) -> bool:
    return {inbox_id for _, inbox_id, _ in copies} != mail.inbox_ids


def api_sends(db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    # A short lease, so an attempt cut by a kill is retried soon after; the relay's whole
    # attempt (deadline 6 s) stays below it, so a slow attempt never overlaps its retry.
    config = lambda server: (  # noqa: E731
        f'[send.smtp_local]\nsmarthost = "127.0.0.1:{controller.port}"\nstarttls = false\ntimeout = 3\ndeadline = 6\n'
    )
    lease = {"POSTERN_MAIL_OUTBOUND_LEASE_SECONDS": "8"}
    deployment = Deployment(db_url, tmp_path, inboxes=1, env=lease, config=config)
    try:
        deployment.wait_ready(("smtp", "outbox"))
        killer = Killer(knobs, deployment.restart, lambda: deployment.wait_ready(("smtp", "outbox")))
        with Clients(knobs.clients, knobs.pace, api_sender(deployment, deployment.inboxes[0])) as clients:
            killer.run()
        deployment.wait_ready(("smtp", "outbox"))
        row = Row("api_sends", database_name(db_url), kills=killer.done, acknowledged=len(clients.acked))
        retry_cut_sends(deployment, clients, row)
        check_sends(deployment, clients, sink, row, killer.killed_at)
        return row
    finally:
        deployment.close()
        controller.stop()


class Sink:
    """The smarthost: a real aiosmtpd server that keeps every message it accepts."""

    def __init__(self):
        self.received: list[bytes] = []
        self.at: list[float] = []  # time.monotonic() of each message's arrival
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append(envelope.original_content or envelope.content)
            self.at.append(time.monotonic())
        return "250 OK queued"


def retry_cut_sends(deployment: Deployment, clients: Clients, row: Row) -> None:
    """What a careful client does with a send that got no answer: send it again with
    the same Idempotency-Key. A send the server had stored must come back as the
    first one (200), never as a second message."""
    row.notes["cut"] = len(clients.cut)
    with httpx.Client(base_url=deployment.server.url, headers=deployment.headers, timeout=30) as http:
        for tag in list(clients.cut):
            resp = post_send(http, deployment.inboxes[0], tag)
            assert resp.status_code in (200, 201), resp.text
            # 200: the server had stored the send before the cut (stored though cut)
            row.stored_cut += resp.status_code == 200


def check_sends(deployment: Deployment, clients: Clients, sink: Sink, row: Row, killed_at: list[tuple]) -> None:
    """Every send answered 2xx ends sent or failed (the outbox finishes what a killed
    worker started) and every sent one reached the sink, the stored bytes intact."""
    from postern.core.models import Message

    def outbound() -> dict[str, Message]:
        with database.connection_context():
            fields = (Message.id, Message.status, Message.raw, Message.subject)
            rows = Message.select(*fields).where(Message.direction == "outbound")
            return {m.subject.removeprefix("crash "): m for m in rows}

    with database.connection_context():
        per_tag = Counter(m.subject for m in Message.select(Message.subject).where(Message.direction == "outbound"))
    row.notes["stored twice"] = sum(1 for n in per_tag.values() if n > 1)  # despite the Idempotency-Key
    row.notes["answered queued"] = sum(1 for view in clients.acked.values() if view["status"] == "queued")
    acked = {**clients.acked, **{tag: None for tag in clients.cut}}  # every cut one was retried until answered
    row.acknowledged = len(acked)
    # Lease (8 s) + the outbox's 5 s sweep + attempts at the relay: well inside a minute.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: all(m.status in FINAL for t, m in outbound().items() if t in acked), timeout=90)
    stored = outbound()
    with sink.lock:
        at_sink = Counter(TAG.search(raw).group(1).decode() for raw in sink.received if TAG.search(raw))
        sink_raw = {TAG.search(raw).group(1).decode(): raw for raw in sink.received if TAG.search(raw)}
    row.lost = sum(tag not in stored for tag in acked)  # answered 2xx, forgotten
    stuck = [tag for tag in acked if tag in stored and stored[tag].status not in FINAL]
    for tag in [t for t in acked if t not in stored][:5]:
        row.found(f"send {tag}: answered 2xx, not stored")
    for tag in stuck[:5]:
        row.found(f"send {tag} ({stored[tag].id}): still {stored[tag].status}")
    sent = [tag for tag in acked if tag in stored and stored[tag].status == "sent"]
    row.notes["stuck"] = len(stuck)
    row.notes["failed"] = sum(1 for tag in acked if tag in stored and stored[tag].status == "failed")
    row.notes["sent, not at sink"] = sum(1 for tag in sent if not at_sink[tag])
    row.lost += row.notes["sent, not at sink"]
    row.duplicated = sum(1 for tag in acked if at_sink[tag] > 1)
    row.notes["copies at sink beyond the first"] = sum(max(0, at_sink[tag] - 1) for tag in acked)
    # At-least-once allows a second copy only after a crash cut the first attempt short
    # of recording it; two copies with no kill between them would be two live attempts.
    with sink.lock:
        arrivals: dict[str, list[float]] = {}
        for raw, at in zip(sink.received, sink.at, strict=True):
            if found := TAG.search(raw):
                arrivals.setdefault(found.group(1).decode(), []).append(at)
    for tag, times in arrivals.items():
        if len(times) > 1 and not any(before <= times[-1] and after >= times[0] for before, after in killed_at):
            row.notes["relayed twice without a kill between"] = (
                row.notes.get("relayed twice without a kill between", 0) + 1
            )
            row.found(
                f"send {tag} ({stored[tag].id if tag in stored else '?'}): relayed {len(times)} times, no kill between"
            )
    # The relay adds a DKIM-Signature header in front; the rest is the stored message.
    row.altered = sum(1 for tag in sent if tag in sink_raw and not _same_message(sink_raw[tag], stored[tag].raw))
    for tag in [t for t in sent if not at_sink[t]][:5]:
        row.found(f"send {tag} ({stored[tag].id}): sent, never reached the sink")


def _same_message(relayed: bytes, stored) -> bool:
    return relayed.endswith(bytes(stored))


def webhooks(db_url: str, tmp_path: Path, knobs: Knobs) -> Row:
    from postern.client import WebhookVerificationError, verify_webhook
    from postern.core.models import WebhookDelivery

    # A 5 s timeout, so attempts repeated because the loaded machine answered late stay
    # rare beside those repeated after a kill (lease: 2 x 5 s + 5 s); short retries, so an
    # attempt that did time out is not put off for minutes.
    env = {
        "POSTERN_WEBHOOKS_ALLOW_DESTINATIONS": "127.0.0.0/8",
        "POSTERN_WEBHOOKS_TIMEOUT_SECONDS": "5",
        "POSTERN_WEBHOOKS_RETRY_SCHEDULE": "1,2,5,5,5,5,5",
    }
    # A small delay keeps attempts in flight, so kills land between sending and recording.
    with Receiver(delay=0.02) as receiver:
        deployment = Deployment(db_url, tmp_path, env=env)
        try:
            created = deployment.api(
                "POST", "/v1/webhooks", json={"url": receiver.url, "event_types": ["message.received"]}
            )
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]
            ready = lambda: deployment.wait_ready(("smtp", "webhooks"))  # noqa: E731
            ready()
            killer = Killer(knobs, kill_service(deployment, "webhooks"), ready)
            sender = smtp_sender(deployment.server.smtp_port, deployment.inboxes)
            with Clients(knobs.clients, knobs.pace, sender) as clients:
                killer.run()

            def deliveries():
                with database.connection_context():
                    return list(WebhookDelivery.select())

            # A delivery whose attempt was cut by a kill is claimed again when its lease
            # (2 x 5 s + 5 s) runs out.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: all(d.status == "succeeded" for d in deliveries()), timeout=90)
            rows = deliveries()
            with receiver.lock:
                got = list(receiver.requests)
                torn = receiver.torn
        finally:
            deployment.close()
    row = Row("webhooks", database_name(db_url), kills=killer.done, acknowledged=len(rows), stored_cut=None)
    seen = Counter(r.headers.get("webhook-id") for r in got)
    bodies = {d.event_id: d.payload.encode() for d in rows}
    row.lost = sum(1 for d in rows if d.status != "succeeded" or not seen[d.event_id])
    for d in [d for d in rows if d.status != "succeeded" or not seen[d.event_id]][:5]:
        row.found(f"delivery {d.id} ({d.event_id}): {d.status}, {seen[d.event_id]} at the receiver")
    row.duplicated = sum(1 for d in rows if seen[d.event_id] > 1)
    row.notes["repeats beyond the first"] = sum(max(0, seen[d.event_id] - 1) for d in rows)
    for request in got:
        try:
            verify_webhook(request.body, request.headers, secret)
            intact = request.body == bodies.get(request.headers.get("webhook-id"))
        except WebhookVerificationError as exc:
            intact = False
            row.found(f"webhook {request.headers.get('webhook-id')}: does not verify: {exc}")
        if not intact:
            event_id = request.headers.get("webhook-id")
            stored = bodies.get(event_id, b"")
            row.found(f"webhook {event_id}: {len(request.body)} bytes received, {len(stored)} stored")
        row.altered += not intact
    # Each acknowledged SMTP message is one event with one delivery, committed together.
    expected = sum(len(mail.inbox_ids) for mail in clients.acked.values())  # an event per stored copy
    row.notes["smtp acked without a delivery"] = max(0, expected - len(rows))
    row.lost += row.notes["smtp acked without a delivery"]
    row.notes["cut"] = len(clients.cut)
    row.notes["stuck"] = sum(1 for d in rows if d.status == "pending")
    row.notes["requests torn by a kill"] = torn
    return row


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<14} {'database':<10} {'kills':>5} {'acked':>6} {'lost':>5} {'dup':>5} "
        f"{'altered':>7} {'stored-cut':>10}  notes"
    )
    out = [head, "-" * len(head)]
    for row in rows:
        cut = "-" if row.stored_cut is None else str(row.stored_cut)
        notes = ", ".join(f"{k} {v}" for k, v in row.notes.items() if v or k in ("cut", "stuck"))
        out.append(
            f"{row.scenario:<14} {row.database:<10} {row.kills:>5} {row.acknowledged:>6} {row.lost:>5} "
            f"{row.duplicated:>5} {row.altered:>7} {cut:>10}  {notes}"
        )
    return "\n".join(out)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S")


def report(row: Row) -> str:
    """The row as a table, with what was wrong with each item found (for assertions)."""
    return "\n".join([table([row]), *row.findings])
