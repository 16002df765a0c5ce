"""Codes, links and text from HTML-only mail, end to end: real SMTP into the supervised
listener, read back over the REST API (summaries, full message, wait)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from test_mail_flow import api, live, make_inbox, messages, smtp  # noqa: F401 (live is a fixture)

from postern.core.db import database
from postern.core.mail.extract import Extraction
from postern.core.models import Message

pytestmark = pytest.mark.slow

HTML = (
    "<html><head><style>.x{}</style></head><body><div style='display:none'>preheader 999999</div>"
    "<p>Ihr Bestätigungscode lautet <b>583 920</b>.</p><p>Bestellung 88-44120 vom 06.12.2026, 49,90 €.</p>"
    "<p><a href='https://konto.example.de/bestaetigen?k=Hq7'>E-Mail-Adresse bestätigen</a></p>"
    "<p><a href='https://konto.example.de/abmelden'>Abmelden</a></p></body></html>"
)


def test_html_only_mail_is_readable_and_its_code_and_link_are_found(live, db_url):  # noqa: F811
    inbox = make_inbox(live, "signup")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Konto <noreply@konto.example.de>", inbox["address"], "Willkommen"
    mail.set_content(HTML, subtype="html")
    with smtp(live) as client:
        client.send_message(mail)

    waited = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params={"after": "0", "timeout": 10})
    assert waited.status_code == 200, waited.text
    [summary] = waited.json()["messages"]
    code = {"value": "583920", "as_written": "583 920", "evidence": "bestätigungscode"}
    link = {
        "url": "https://konto.example.de/bestaetigen?k=Hq7",
        "kind": "verify",
        "evidence": "bestätigen",
        "sender_domain": True,
    }
    assert summary["codes"] == [code] and summary["links"] == [link]
    assert "583 920" in summary["snippet"] and "999999" not in summary["snippet"]
    assert messages(live, inbox)[0]["codes"] == [code]

    full = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/{summary['id']}").json()
    assert full["codes"] == [code] and full["links"] == [link]
    assert "Bestätigungscode lautet 583 920" in full["text"] and full["html"].startswith("<html>")

    with database.connection_context():
        stored = Message.get_by_id(summary["id"])
        assert Extraction.stored(stored).codes[0].value == "583920"


def test_plain_mail_without_codes_shows_empty_lists(live):  # noqa: F811
    inbox = make_inbox(live, "plain")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.org", inbox["address"], "Lunch"
    mail.set_content("Lunch at 12:30 on 2026-12-06? Room 4012.")
    with smtp(live) as client:
        client.send_message(mail)
    api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params={"after": "0", "timeout": 10})
    [summary] = messages(live, inbox)
    assert summary["codes"] == [] and summary["links"] == []
    assert summary["snippet"].startswith("Lunch at 12:30")
