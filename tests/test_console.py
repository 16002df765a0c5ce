"""The console over the real API app (falcon's test client): sign-in, sessions, CSRF,
tenancy on every page, the key shown once, mail pages and the sanitised frame.
tests/test_console_browser.py drives the same pages in a real Chromium."""

from __future__ import annotations

import base64
import datetime as dt
import re

import falcon.testing
import pytest
from click.testing import CliRunner
from support.world import make_tenant, operator_token, seed_inbox

from postern.api import create_app
from postern.cli.app import cli
from postern.core.mail.ingest import ingest
from postern.core.models import AdminToken, AuditEvent, ConsoleSession, EnrollmentKey, Inbox, Message, utcnow

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sign_in(client, token: str) -> dict:
    result = client.simulate_post("/console/login", body=f"token={token}", headers=FORM)
    assert result.status_code == 303, result.text
    assert result.headers["location"].endswith("/console")
    return {"postern_console": result.cookies["postern_console"].value}


def csrf_of(client, cookies) -> str:
    page = client.simulate_get("/console", cookies=cookies)
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def post(client, path, cookies, csrf=None, **fields):
    if csrf is not None:
        fields["csrf"] = csrf
    body = "&".join(f"{k}={v}" for k, v in fields.items())
    return client.simulate_post(path, body=body, headers=FORM, cookies=cookies)


@pytest.fixture
def world(postern):
    a, b = make_tenant("acme"), make_tenant("bolt")
    a_inbox = seed_inbox(postern, a.agent_key(handle="sales"), "sales")
    b_inbox = seed_inbox(postern, b.agent_key(handle="ops"), "ops")
    return a, b, a_inbox, b_inbox


def test_pages_carry_the_security_headers_and_need_a_session(client, world):
    login = client.simulate_get("/console/login")
    assert login.status_code == 200
    csp = login.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in login.text  # no inline script anywhere
    for path in ("/console", "/console/keys", "/console/inboxes", f"/console/inboxes/{world[2].id}", "/console/audit"):
        result = client.simulate_get(path)
        assert result.status_code == 303 and result.headers["location"].endswith("/console/login"), path


def test_a_token_signs_in_with_a_strict_http_only_cookie_and_sign_out_ends_it(client, world):
    a = world[0]
    result = client.simulate_post("/console/login", body=f"token={a.admin_token}", headers=FORM)
    cookie = result.cookies["postern_console"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/console"
    assert cookie.value not in {s.secret_hash for s in ConsoleSession.select()}  # only its hash is kept
    cookies = {"postern_console": cookie.value}
    overview = client.simulate_get("/console", cookies=cookies)
    assert overview.status_code == 200 and "Overview" in overview.text
    assert "Customers</a>" not in overview.text  # an org admin has no customers page
    csrf = csrf_of(client, cookies)
    assert post(client, "/console/logout", cookies, csrf).status_code == 303
    assert client.simulate_get("/console", cookies=cookies).status_code == 303
    logins = AuditEvent.select().where(AuditEvent.action.in_(["console.login", "console.logout"]))
    assert {e.action for e in logins} == {"console.login", "console.logout"}


def test_wrong_tokens_are_refused_alike_and_throttled(postern, world):
    postern.config.console.max_failed_logins = 3
    client = falcon.testing.TestClient(create_app(postern))
    answers = []
    for token in ("nonsense", "pk_admin_" + "x" * 40, world[0].admin_token.replace("pk_admin_", "pk_agent_")):
        result = client.simulate_post("/console/login", body=f"token={token}", headers=FORM)
        answers.append((result.status_code, "not a valid admin token" in result.text))
    assert {a[1] for a in answers} == {True}
    throttled = client.simulate_post("/console/login", body=f"token={world[0].admin_token}", headers=FORM)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert "postern_console" not in throttled.cookies  # even the right token waits


def test_a_console_link_works_once(client, config, world, monkeypatch):
    monkeypatch.setenv("POSTERN_DATABASE_URL", config.database_url)
    monkeypatch.setenv("POSTERN_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("POSTERN_TRUST_VERIFY", "false")
    out = CliRunner().invoke(cli, ["admin", "console-link", "--customer", "acme"])
    assert out.exit_code == 0, out.output
    url = re.search(r"http://\S+", out.output).group(0)
    assert url.startswith("http://127.0.0.1:") and "/console/link?code=" in url
    code = url.split("code=", 1)[1]
    shown = client.simulate_get("/console/link", params={"code": code})
    assert shown.status_code == 200 and "data-autosubmit" in shown.text  # GET alone spends nothing
    first = client.simulate_post("/console/link", body=f"code={code}", headers=FORM)
    assert first.status_code == 303
    cookies = {"postern_console": first.cookies["postern_console"].value}
    page = client.simulate_get("/console/inboxes", cookies=cookies)
    assert world[2].address in page.text and world[3].address not in page.text  # acme's only
    again = client.simulate_post("/console/link", body=f"code={code}", headers=FORM)
    assert again.status_code == 401 and "postern_console" not in again.cookies


def test_state_changes_need_the_csrf_token(client, world):
    a = world[0]
    cookies = sign_in(client, a.admin_token)
    before = EnrollmentKey.select().count()
    refused = post(client, "/console/keys", cookies, **{"scope:mailbox:read": "on", "max_mailboxes": "2"})
    assert refused.status_code == 403
    wrong = post(client, "/console/keys", cookies, "not-the-token", max_mailboxes="2")
    assert wrong.status_code == 403
    assert EnrollmentKey.select().count() == before
    denied = AuditEvent.select().where(AuditEvent.code == "csrf").count()
    assert denied == 2


def test_a_key_is_shown_once_then_revoked(client, world):
    a = world[0]
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    made = post(
        client,
        "/console/keys",
        cookies,
        csrf,
        **{"scope:mailbox:read": "on", "max_mailboxes": "3", "description": "console+made", "expires_days": "2"},
    )
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    plaintext = re.search(r'value="(pk_enroll_[^"]+)"', made.text).group(1)
    key = EnrollmentKey.get(EnrollmentKey.description == "console made")
    assert key.scopes == "mailbox:read" and key.max_mailboxes == 3 and key.customer_id == a.customer.id
    listing = client.simulate_get("/console/keys", cookies=cookies)
    assert key.key_prefix in listing.text and plaintext not in listing.text
    assert post(client, f"/console/keys/{key.id}/revoke", cookies, csrf).status_code == 303
    assert EnrollmentKey.get_by_id(key.id).revoked_at is not None
    created = AuditEvent.get(AuditEvent.action == "enrollment_key.create", AuditEvent.target == key.id)
    assert created.token_id == ConsoleSession.get().admin_token_id  # audited as the admin token


def test_another_tenants_ids_read_as_missing_on_every_page(client, world, postern):
    a, b, a_inbox, b_inbox = world
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    b_agent, b_key = b_inbox.agent_id, b.enrollment_keys[0].id
    b_message = b_inbox.messages.get().id
    missing = {
        "inbox": ("inb_" + "0" * 26, b_inbox.id),
        "agent": ("agt_" + "0" * 26, b_agent),
    }
    for kind, (nobody, foreign) in missing.items():
        path = {"inbox": "/console/inboxes/{}", "agent": "/console/agents/{}"}[kind]
        one = client.simulate_get(path.format(nobody), cookies=cookies)
        two = client.simulate_get(path.format(foreign), cookies=cookies)
        assert one.status_code == two.status_code == 404, kind
        assert one.text.replace(nobody, "ID") == two.text.replace(foreign, "ID"), kind
    for path in (
        f"/console/inboxes/{b_inbox.id}/messages/{b_message}",
        f"/console/inboxes/{b_inbox.id}/messages/{b_message}/frame",
        f"/console/inboxes/{b_inbox.id}/live?after=0",
    ):
        assert client.simulate_get(path, cookies=cookies).status_code == 404, path
    for path in (
        f"/console/keys/{b_key}/revoke",
        f"/console/inboxes/{b_inbox.id}/delete",
        f"/console/inboxes/{b_inbox.id}/messages/{b_message}/download",
    ):
        assert post(client, path, cookies, csrf).status_code == 404, path
    assert EnrollmentKey.get_by_id(b_key).revoked_at is None
    assert Inbox.get_or_none(Inbox.id == b_inbox.id) is not None
    assert "bolt" not in client.simulate_get("/console/audit", cookies=cookies).text


def test_the_operator_sees_every_tenant_and_creates_customers(client, world):
    cookies = sign_in(client, operator_token())
    csrf = csrf_of(client, cookies)
    inboxes = client.simulate_get("/console/inboxes", cookies=cookies).text
    assert world[2].address in inboxes and world[3].address in inboxes
    search = client.simulate_get("/console/inboxes", params={"q": "ops@"}, cookies=cookies).text
    assert world[3].address in search and world[2].address not in search
    assert post(client, "/console/customers", cookies, csrf, label="cobalt", name="Cobalt").status_code == 303
    assert "cobalt" in client.simulate_get("/console/customers", cookies=cookies).text
    bad = post(client, "/console/customers", cookies, csrf, label="NOT a label!")
    assert bad.status_code == 422 and "label" in bad.text


def test_mail_pages_show_messages_and_sanitise_html(client, postern, world):
    a, _, inbox, _ = world
    raw = (
        f"From: Eve <eve@example.org>\r\nTo: {inbox.address}\r\nSubject: hostile\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html\r\n\r\n<p>hi</p><script>alert(1)</script>"
        "<img src=http://evil.example/p.gif onerror=x()>"
    ).encode()
    ingest(postern, raw, "eve@example.org", [inbox.address])
    cookies = sign_in(client, a.admin_token)
    listing = client.simulate_get(f"/console/inboxes/{inbox.id}", cookies=cookies)
    assert "hostile" in listing.text and "seed" in listing.text
    message = Message.get((Message.inbox == inbox.id) & (Message.subject == "hostile"))
    page = client.simulate_get(f"/console/inboxes/{inbox.id}/messages/{message.id}", cookies=cookies)
    assert page.status_code == 200 and '<iframe class="mailframe" sandbox' in page.text
    assert "<script>alert" not in page.text
    frame = client.simulate_get(f"/console/inboxes/{inbox.id}/messages/{message.id}/frame", cookies=cookies)
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "default-src 'none'" in frame.headers["content-security-policy"]
    assert "<script" not in frame.text and "onerror" not in frame.text and "evil.example" not in frame.text
    assert "<p>hi</p>" in frame.text


def test_downloads_go_through_a_single_use_link(client, world):
    a, _, inbox, _ = world
    message = Message.get(Message.inbox == inbox.id)
    cookies = sign_in(client, a.admin_token)
    csrf = csrf_of(client, cookies)
    result = post(client, f"/console/inboxes/{inbox.id}/messages/{message.id}/download", cookies, csrf)
    assert result.status_code == 303
    link = result.headers["location"]
    assert link.startswith("/v1/downloads/")
    raw = client.simulate_get(link)
    assert raw.status_code == 200 and b"Subject: seed" in raw.content
    assert client.simulate_get(link).status_code == 410


def test_live_answers_with_mail_newer_than_the_page(client, postern, world):
    a, _, inbox, _ = world
    cookies = sign_in(client, a.admin_token)
    after = Inbox.get_by_id(inbox.id).last_seq
    ingest(
        postern,
        f"From: x@example.org\r\nTo: {inbox.address}\r\nSubject: fresh one\r\n\r\nhi\r\n".encode(),
        "x@example.org",
        [inbox.address],
    )
    live = client.simulate_get(f"/console/inboxes/{inbox.id}/live", params={"after": after}, cookies=cookies)
    assert live.status_code == 200
    assert "fresh one" in live.text and 'hx-swap-oob="afterbegin:#rows"' in live.text
    assert f"after={after + 1}" in live.text
    bad = client.simulate_get(f"/console/inboxes/{inbox.id}/live", params={"after": "x"}, cookies=cookies)
    assert bad.status_code == 422


def test_sessions_expire_idle_and_absolute_and_with_their_token(client, world):
    a = world[0]
    cookies = sign_in(client, a.admin_token)
    session = ConsoleSession.get()
    ConsoleSession.update(last_seen_at=utcnow() - dt.timedelta(minutes=31)).execute()
    assert client.simulate_get("/console", cookies=cookies).status_code == 303
    cookies = sign_in(client, a.admin_token)
    ConsoleSession.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
        ConsoleSession.id != session.id
    ).execute()
    assert client.simulate_get("/console", cookies=cookies).status_code == 303
    cookies = sign_in(client, a.admin_token)
    assert client.simulate_get("/console", cookies=cookies).status_code == 200
    AdminToken.update(revoked_at=utcnow()).execute()
    assert client.simulate_get("/console", cookies=cookies).status_code == 303


def test_static_files_are_served_by_name_only(client):
    assert client.simulate_get("/console/static/console.css").status_code == 200
    htmx = client.simulate_get("/console/static/htmx-2.0.11.min.js")
    assert htmx.status_code == 200 and "immutable" in htmx.headers["cache-control"]
    assert client.simulate_get("/console/static/..%2Fweb.py").status_code == 404
    assert client.simulate_get("/console/static/web.py").status_code == 404


def test_inline_images_show_from_the_message_itself(client, postern, world):
    a, _, inbox, _ = world
    png = bytes.fromhex("89504e470d0a1a0a") + b"fake-png-body"
    raw = (
        f"From: x@example.org\r\nTo: {inbox.address}\r\nSubject: inline\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/html\r\n\r\n"
        '<p>logo</p><img src="cid:logo@x" alt="logo"><img src="cid:missing@x" alt="gone">'
        '<img src="cid:script@x" alt="not an image">\r\n'
        "--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(png).decode()}\r\n"
        "--r\r\nContent-Type: text/html\r\nContent-ID: <script@x>\r\n\r\n<script>alert(1)</script>\r\n"
        "--r--\r\n"
    ).encode()
    ingest(postern, raw, "x@example.org", [inbox.address])
    message = Message.get((Message.inbox == inbox.id) & (Message.subject == "inline"))
    cookies = sign_in(client, a.admin_token)
    frame = client.simulate_get(f"/console/inboxes/{inbox.id}/messages/{message.id}/frame", cookies=cookies).text
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in frame
    assert "cid:" not in frame.split("<body>", 1)[1]  # unresolved and non-image parts lose their src
    assert "data:text" not in frame


def test_the_cookie_is_secure_over_https(client, world):
    result = client.simulate_post(
        "/console/login", body=f"token={world[0].admin_token}", headers=FORM, protocol="https"
    )
    assert result.status_code == 303 and result.cookies["postern_console"].secure
    plain = client.simulate_post("/console/login", body=f"token={world[0].admin_token}", headers=FORM)
    assert not plain.cookies["postern_console"].secure


def test_the_audit_page_filters_and_pages(client, world):
    a = world[0]
    cookies = sign_in(client, a.admin_token)
    for _ in range(3):
        client.simulate_get(f"/console/inboxes/{world[2].id}", cookies=cookies)
    page = client.simulate_get("/console/audit", params={"action": "console.login"}, cookies=cookies)
    actions = re.findall(r"<td><code>([a-z_.]+)</code></td>", page.text)
    assert actions == ["console.login"]
    denied = client.simulate_get("/console/audit", params={"outcome": "denied"}, cookies=cookies)
    assert re.findall(r"<td><code>([a-z_.]+)</code></td>", denied.text) == []
    later = client.simulate_get("/console/audit", params={"since": "2999-01-01T00:00:00Z"}, cookies=cookies)
    assert "Nothing yet." in later.text
    bad = client.simulate_get("/console/audit", params={"since": "yesterday"}, cookies=cookies)
    assert bad.status_code == 422
    # Paging: 50 a page, and the next page starts where the first ended.
    for _ in range(50):
        client.simulate_get("/console/agents", cookies=cookies)
    first = client.simulate_get("/console/audit", cookies=cookies)
    token = re.search(r'page_token=([^"&]+)', first.text).group(1)
    second = client.simulate_get(f"/console/audit?page_token={token}", cookies=cookies)
    assert second.status_code == 200
    first_ids, second_ids = (re.findall(r'<tr id="([^"]+)">', r.text) for r in (first, second))
    assert len(first_ids) == 50 and second_ids and not set(first_ids) & set(second_ids)
