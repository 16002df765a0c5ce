"""The wildduck backend under a real `postern serve`, against a real WildDuck: SMTP in,
LMTP straight into WildDuck, IMAP read-back, the Sent folder, a killed watcher, and
WildDuck going away and coming back."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import smtplib
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from imapclient import IMAPClient
from support.server import Server, kill_tree, wait_for
from support.wildduck_stack import missing_inbox
from support.world import make_tenant

from postern.core import migrations
from postern.core.db import database, open_database

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def serving(env, tmp_path, db_url, stack, extra: str = ""):
    """``postern serve`` with wildduck receiving; ``extra`` lines join [receive.wildduck]."""
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        tenant = make_tenant("acme")
        enrolled = tenant.agent_key(handle="support", max_mailboxes=10)

    def config(server):
        return (
            '[receive]\nbackend = "wildduck"\n[receive.wildduck]\n'
            f'smtp_bind = "127.0.0.1:{server.smtp_port}"\n'
            f'api_url = "{stack.api_url}"\nredis_url = "{stack.redis_url}"\n'
            f'lmtp_host = "127.0.0.1"\nlmtp_port = {stack.lmtp_port}\n'
            f'imap_host = "127.0.0.1"\nimap_port = {stack.imap_port}\nimap_tls = false\n'
            "timeout_seconds = 3\n"
            # No sweep within any test: mail that arrives while the watcher runs must come
            # by the doorbell (a restarted watcher still sweeps once at its start).
            "sweep_seconds = 3600\n"
            f"{extra}"
        )

    server = Server(env, tmp_path, config=config)
    server.key, server.stack, server.admin_token = enrolled.agent_key, stack, tenant.admin_token
    try:
        wait_for(lambda: (h := server.health()) and {"smtp", "wildduck-watcher"} <= {s["name"] for s in h["services"]})
        wait_for(lambda: _smtp_ready(server.smtp_port))
        yield server
    finally:
        kill_tree(server)


@pytest.fixture(params=["unchecked"])
def live(request, env, tmp_path, db_url, wildduck_stack):
    """The server; with ``checked`` (parametrize ``live`` indirectly) [trust] verify is on
    against a DNS server on 127.0.0.1 that knows no name (every sender unauthenticated,
    delivered marked), so the front door stamps a verdict into every message."""
    if request.param == "unchecked":
        with serving(env, tmp_path, db_url, wildduck_stack) as server:
            yield server
        return
    from support.zone_dns import ZoneDns

    zone = ZoneDns({})
    trust = {"POSTERN_TRUST_VERIFY": "true", "POSTERN_TRUST_RESOLVER": zone.address, "POSTERN_TRUST_DNS_TIMEOUT": "2"}
    try:
        with serving({**env, **trust}, tmp_path, db_url, wildduck_stack) as server:
            yield server
    finally:
        zone.close()


def _smtp_ready(port) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


def api(server, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {server.key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def make_inbox(server, username):
    resp = api(server, "POST", "/v1/inboxes", json={"username": username})
    assert resp.status_code == 201, resp.text
    return resp.json()


def wait_mail(server, inbox, after="0", timeout=30):
    """wait_for_email from ``after`` (default: the start, so mail that arrived before
    the wait opened counts too: without ``after`` a wait returns only the next one)."""
    params = {"timeout": timeout, "after": after}
    resp = api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def mail(sender, rcpt, subject) -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\nHello from {sender}\r\n"
    ).encode()


def imap_for(server, inbox) -> IMAPClient:
    """Log in as a human would: with an app password WildDuck issued for the mailbox."""
    stack = server.stack
    user = httpx.get(f"{stack.api_url}/addresses/resolve/{inbox['address']}").json()["user"]
    password = httpx.post(f"{stack.api_url}/users/{user}/asps", json={"description": "t", "scopes": ["imap"]})
    client = IMAPClient("127.0.0.1", port=stack.imap_port, ssl=False, timeout=10)
    client.login(inbox["address"], password.json()["password"])
    return client


def subjects(server, inbox, direction="inbound") -> list[str]:
    params = {"direction": direction}
    data = api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages", params=params).json()["data"]
    return sorted(m["subject"] for m in data)


def test_smtp_into_postern_lands_in_wildduck_and_the_api(live):
    inbox = make_inbox(live, "front")
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
        assert (
            client.sendmail("alice@example.org", [inbox["address"]], mail("alice@example.org", "x", "via smtp")) == {}
        )
        code, _ = client.rcpt("nobody@acme.agents.localhost") if client.mail("a@example.org")[0] == 250 else (0, b"")
        assert code == 550
    result = wait_mail(live, inbox)
    assert [m["subject"] for m in result["messages"]] == ["via smtp"]
    with imap_for(live, inbox) as imap:
        imap.select_folder("INBOX")
        uids = imap.search(["SUBJECT", "via smtp"])
        assert len(uids) == 1
        body = imap.fetch(uids, ["RFC822"])[uids[0]][b"RFC822"]
        assert b"Hello from alice@example.org" in body and b"Delivered-To: " + inbox["address"].encode() in body
    # Exactly once: a sweep and more rings later, still one message.
    assert wait_mail(live, inbox, after=result["cursor"], timeout=2)["messages"] == []
    assert subjects(live, inbox) == ["via smtp"]


def test_mail_straight_to_wildduck_lmtp_reaches_wait_for_email(live):
    """An MX delivering to WildDuck's LMTP, bypassing Postern: the doorbell brings it in.
    Sweeps are an hour apart here and the wait gives up after 30 s. The first message may
    come by the watcher's sweep at its start; once it is in, that sweep has passed this
    mailbox, so the second can only come by a ring."""
    inbox = make_inbox(live, "direct")
    with smtplib.LMTP("127.0.0.1", live.stack.lmtp_port) as lmtp:
        assert lmtp.sendmail("bob@example.org", [inbox["address"]], mail("bob@example.org", "x", "via lmtp")) == {}
    result = wait_mail(live, inbox)
    assert [(m["subject"], m["from"]["address"]) for m in result["messages"]] == [("via lmtp", "bob@example.org")]
    with smtplib.LMTP("127.0.0.1", live.stack.lmtp_port) as lmtp:
        assert lmtp.sendmail("bob@example.org", [inbox["address"]], mail("bob@example.org", "x", "rung in")) == {}
    assert [m["subject"] for m in wait_mail(live, inbox, after=result["cursor"])["messages"]] == ["rung in"]


def test_a_sent_reply_appears_in_the_sent_folder(live):
    inbox = make_inbox(live, "replier")
    with smtplib.LMTP("127.0.0.1", live.stack.lmtp_port) as lmtp:
        lmtp.sendmail("carol@example.org", [inbox["address"]], mail("carol@example.org", "x", "question"))
    message = wait_mail(live, inbox)["messages"][0]
    resp = api(live, "POST", f"/v1/inboxes/{inbox['id']}/messages/{message['id']}/reply", json={"text": "Answer."})
    assert resp.status_code in (200, 201, 202), resp.text
    with imap_for(live, inbox) as imap:

        def in_sent():
            imap.select_folder("Sent Mail", readonly=True)
            return imap.search(["SUBJECT", "Re: question"])

        uids = wait_for(in_sent, timeout=30, interval=0.2)
        data = imap.fetch(uids, ["RFC822", "FLAGS"])[uids[0]]
        assert b"Answer." in data[b"RFC822"] and b"In-Reply-To: <question@example.org>" in data[b"RFC822"]
        assert b"\\Seen" in data[b"FLAGS"]
    # The Sent copy is not ingested as inbound mail.
    assert subjects(live, inbox) == ["question"]
    assert subjects(live, inbox, "outbound") == ["Re: question"]


def _watcher(server) -> psutil.Process:
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        if "wildduck-watcher" in " ".join(proc.cmdline()):
            return proc
    return None


def test_killed_watcher_neither_loses_nor_duplicates(live):
    inbox = make_inbox(live, "restart")
    with smtplib.LMTP("127.0.0.1", live.stack.lmtp_port) as lmtp:
        lmtp.sendmail("dan@example.org", [inbox["address"]], mail("dan@example.org", "x", "before"))
    first = wait_mail(live, inbox)
    watcher = wait_for(lambda: _watcher(live))
    watcher.kill()
    watcher.wait(10)
    with smtplib.LMTP("127.0.0.1", live.stack.lmtp_port) as lmtp:  # while no watcher runs
        lmtp.sendmail("dan@example.org", [inbox["address"]], mail("dan@example.org", "x", "during"))
    second = wait_mail(live, inbox, after=first["cursor"], timeout=60)
    assert [m["subject"] for m in second["messages"]] == ["during"]
    assert wait_for(lambda: (p := _watcher(live)) and p.pid != watcher.pid)
    assert wait_mail(live, inbox, after=second["cursor"], timeout=2)["messages"] == []
    assert subjects(live, inbox) == ["before", "during"]


def test_wildduck_down_gives_4xx_and_503_then_recovers(live):
    inbox = make_inbox(live, "outage")
    live.stack.stop_wildduck()
    try:
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("erin@example.org", [inbox["address"]], mail("erin@example.org", "x", "held"))
        assert 400 <= refused.value.smtp_code < 500
        resp = api(live, "POST", "/v1/inboxes", json={"username": "during-outage"})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "provisioning_failed"
        assert "Retry-After" in resp.headers
    finally:
        live.stack.start_wildduck()
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
        assert client.sendmail("erin@example.org", [inbox["address"]], mail("erin@example.org", "x", "resent")) == {}
    assert [m["subject"] for m in wait_mail(live, inbox)["messages"]] == ["resent"]
    assert make_inbox(live, "during-outage")["address"].startswith("during-outage@")
    assert subjects(live, inbox) == ["resent"]


def wd_user(server, inbox) -> str:
    return httpx.get(f"{server.stack.api_url}/addresses/resolve/{inbox['address']}").json()["user"]


def inbox_copies(server, inbox, subject) -> int:
    with imap_for(server, inbox) as imap:
        imap.select_folder("INBOX", readonly=True)
        return len(imap.search(["SUBJECT", subject]))


def test_agent_mail_to_another_inbox_reaches_wildduck_and_wait_for_email_once(live):
    asker, answerer = make_inbox(live, "asker"), make_inbox(live, "answerer")
    body = {"to": [answerer["address"]], "subject": "agent to agent", "text": "Over LMTP."}
    resp = api(live, "POST", f"/v1/inboxes/{asker['id']}/messages", json=body)
    assert resp.status_code in (200, 201, 202) and resp.json()["status"] == "sent", resp.text
    result = wait_mail(live, answerer)
    assert [(m["subject"], m["from"]["address"]) for m in result["messages"]] == [("agent to agent", asker["address"])]
    assert inbox_copies(live, answerer, "agent to agent") == 1
    assert wait_mail(live, answerer, after=result["cursor"], timeout=2)["messages"] == []
    assert subjects(live, answerer) == ["agent to agent"]


@pytest.mark.parametrize("live", ["unchecked", "checked"], indirect=True)
def test_a_retry_after_a_partial_lmtp_delivery_reaches_only_the_rest(live):
    """WildDuck stores the message for one recipient and answers 450 for the other: the
    sender gets a 451, and its retry of the same message reaches only the second (also
    when each attempt is stamped with a verdict of its own)."""
    # Names of this run's own: WildDuck (and its mailboxes) lives for the whole session.
    tag = secrets.token_hex(3)
    first, second = make_inbox(live, f"first-{tag}"), make_inbox(live, f"second-{tag}")
    subject = f"two recipients {tag}"
    raw = mail("fay@example.org", first["address"], subject)
    rcpts = [first["address"], second["address"]]
    with missing_inbox(live.stack, wd_user(live, second)):
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("fay@example.org", rcpts, raw)
    assert refused.value.smtp_code == 451 and b"(1 reached)" in refused.value.smtp_error
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as client:
        assert client.sendmail("fay@example.org", rcpts, raw) == {}  # the sender's retry
    assert [m["subject"] for m in wait_mail(live, second)["messages"]] == [subject]
    assert [m["subject"] for m in wait_mail(live, first)["messages"]] == [subject]
    assert (inbox_copies(live, first, subject), inbox_copies(live, second, subject)) == (1, 1)
    assert (subjects(live, first), subjects(live, second)) == ([subject], [subject])


def test_a_send_while_wildduck_is_down_reaches_the_sent_folder_once_it_is_back(live):
    inbox = make_inbox(live, "patient")
    live.stack.stop_wildduck()
    try:
        body = {"to": ["gus@example.org"], "subject": "sent during the outage", "text": "Later."}
        resp = api(live, "POST", f"/v1/inboxes/{inbox['id']}/messages", json=body)
        assert resp.status_code in (200, 201, 202), resp.text
    finally:
        live.stack.start_wildduck()
    with imap_for(live, inbox) as imap:

        def in_sent():
            imap.select_folder("Sent Mail", readonly=True)
            return imap.search(["SUBJECT", "sent during the outage"])

        assert len(wait_for(in_sent, timeout=60, interval=0.5)) == 1
    # The watcher is done with it: nothing more is due, and there is still one copy.
    assert wait_for(lambda: _no_sent_due(live), timeout=30)
    with imap_for(live, inbox) as imap:
        imap.select_folder("Sent Mail", readonly=True)
        assert len(imap.search(["SUBJECT", "sent during the outage"])) == 1


def _no_sent_due(server) -> bool:
    from postern.plugins.wildduck.models import WildDuckSentDue

    with database.connection_context():
        return WildDuckSentDue.select().count() == 0


# -- the front door in several processes ------------------------------------------------


def front_door_processes(server) -> list[psutil.Process]:
    """The forked listener processes of the SMTP service (its parent serves nothing)."""
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if "smtp" in proc.cmdline() and proc.parent().pid == server.proc.pid:
                return proc.children()
        except psutil.NoSuchProcess:
            continue
    return []


def test_the_front_door_serves_in_the_processes_asked_for(env, tmp_path, db_url, wildduck_stack):
    """``processes = 2`` in [receive.wildduck]: the front door is the core's listener, so
    it forks like smtp_local's; every process hands mail to WildDuck, and one killed is
    replaced while the other goes on taking mail.

    The concurrent mail goes to one inbox each: SecantusDB (this machine's MongoDB
    stand-in) does not make WildDuck's UID allocation (``findOneAndUpdate`` with ``$inc``)
    atomic, so concurrent deliveries into one mailbox can share a UID there (seen: 47
    distinct UIDs for 48 messages), which real MongoDB never does (docs/wildduck.md)."""
    with serving(env, tmp_path, db_url, wildduck_stack, "processes = 2\n") as server:
        wait_for(lambda: len(front_door_processes(server)) == 2)
        inboxes = [make_inbox(server, f"forked{n}") for n in range(6)]

        def send(n: int) -> int:
            rcpt = inboxes[n % 6]["address"]
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
                client.sendmail("a@example.org", [rcpt], mail("a@example.org", rcpt, f"p{n}"))
            return n

        with ThreadPoolExecutor(6) as pool:
            assert sorted(pool.map(send, range(6))) == list(range(6))
        first = front_door_processes(server)
        os.kill(first[0].pid, signal.SIGKILL)
        assert send(6) == 6  # the other process still accepts
        wait_for(lambda: len(front_door_processes(server)) == 2 and first[0] not in front_door_processes(server))
        expected = [["p0", "p6"]] + [[f"p{n}"] for n in range(1, 6)]
        wait_for(lambda: [subjects(server, inbox) for inbox in inboxes] == expected, timeout=60)


def test_the_front_door_checks_senders_holds_what_policy_holds_and_drops_forged_verdicts(
    env, tmp_path, db_url, wildduck_stack
):
    """With [trust] verify on, the front door screens like smtp_local: the verdict it
    makes travels to the watcher by the id in its Authentication-Results, a p=reject
    failure stays in Postern's quarantine and never reaches WildDuck, and mail put into
    WildDuck some other way with a forged Postern verdict is stored without it."""
    from support.zone_dns import ZoneDns

    from postern.core.smtp.options import DEFAULT_HOSTNAME as AUTHSERV_ID  # the front door's hostname

    zone = ZoneDns(
        {
            ("sender.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
            ("_dmarc.victim.example", "TXT"): ["v=DMARC1; p=reject"],
        }
    )
    trust = {"POSTERN_TRUST_VERIFY": "true", "POSTERN_TRUST_RESOLVER": zone.address, "POSTERN_TRUST_DNS_TIMEOUT": "2"}
    try:
        with serving({**env, **trust}, tmp_path, db_url, wildduck_stack) as server:
            inbox = make_inbox(server, "screened")
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
                client.sendmail("alice@sender.example", [inbox["address"]], mail("alice@sender.example", "x", "proven"))
                client.sendmail("alice@sender.example", [inbox["address"]], mail("ceo@victim.example", "x", "spoof"))
            forged = mail("ceo@victim.example", inbox["address"], "bypass").replace(
                b"Subject:",
                f"Authentication-Results: {AUTHSERV_ID} (verdict vrd_forged); dmarc=pass\r\nSubject:".encode(),
            )
            with smtplib.LMTP("127.0.0.1", wildduck_stack.lmtp_port) as lmtp:  # straight into WildDuck
                lmtp.sendmail("ceo@victim.example", [inbox["address"]], forged)
            wait_for(lambda: subjects(server, inbox) == ["bypass", "proven"], timeout=60)
            listed = api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").json()["data"]
            by_subject = {m["subject"]: m for m in listed}
            path = f"/v1/inboxes/{inbox['id']}/messages"
            proven = api(server, "GET", f"{path}/{by_subject['proven']['id']}").json()
            assert (proven["authentication"]["spf"], proven["authentication"]["aligned"]) == ("pass", True)
            ours = [v for n, v in proven["headers"] if n.lower() == "authentication-results"]
            assert len(ours) == 1 and ours[0].startswith(f"{AUTHSERV_ID} (verdict vrd_") and "spf=pass" in ours[0]
            bypass = api(server, "GET", f"{path}/{by_subject['bypass']['id']}").json()
            assert bypass["authentication"] is None and by_subject["bypass"]["verified_sender"] is False
            assert not [v for n, v in bypass["headers"] if n.lower() == "authentication-results"]
            # A real verdict id copied into other mail, and a forged header in capitals,
            # prove nothing either.
            real_id = ours[0].split("(verdict ", 1)[1].split(")", 1)[0]
            copied = mail("ceo@victim.example", inbox["address"], "copied").replace(
                b"Subject:", f"Authentication-Results: {AUTHSERV_ID} (verdict {real_id}); spf=pass\r\nSubject:".encode()
            )
            shouted = mail("ceo@victim.example", inbox["address"], "shouted").replace(
                b"Subject:", f"AUTHENTICATION-RESULTS: {AUTHSERV_ID}; dmarc=pass\r\nSubject:".encode()
            )
            with smtplib.LMTP("127.0.0.1", wildduck_stack.lmtp_port) as lmtp:
                for raw in (copied, shouted):
                    lmtp.sendmail("ceo@victim.example", [inbox["address"]], raw)
            wait_for(lambda: subjects(server, inbox) == ["bypass", "copied", "proven", "shouted"], timeout=60)
            listed = api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").json()["data"]
            for m in listed:
                if m["subject"] in ("copied", "shouted"):
                    full = api(server, "GET", f"{path}/{m['id']}").json()
                    assert full["authentication"] is None, m["subject"]
                    assert not [v for n, v in full["headers"] if n.lower() == "authentication-results"], m["subject"]
            admin = {"Authorization": f"Bearer {server.admin_token}"}
            held = httpx.get(f"{server.url}/v1/admin/quarantine", headers=admin, timeout=30).json()["data"]
            assert [(h["subject"], h["reason"]) for h in held] == [("spoof", "dmarc_reject")]
            with imap_for(server, inbox) as imap:  # the held copy never reached WildDuck
                imap.select_folder("INBOX")
                found = imap.fetch(imap.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
                seen = sorted(
                    v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip() for v in found.values()
                )
            assert seen == ["bypass", "copied", "proven", "shouted"]
    finally:
        zone.close()
