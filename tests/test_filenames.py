"""Attachment filenames carry no bidi or other format characters, in the API, downloads
and (tests/test_mcp.py) MCP (hardening issue, item 7)."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

import falcon.testing
import pytest
from support.world import make_tenant

from postern.api import create_app
from postern.core.mail.ingest import ingest
from postern.core.mail.mime import sanitize_filename
from postern.core.models import Attachment
from postern.core.runtime import build_postern

RLO_NAME = "évil.pdf\u202egpj.exe"  # displays as "évil.pdfexe.jpg"


@pytest.mark.parametrize(
    "name, expected",
    [
        (RLO_NAME, "évil.pdfgpj.exe"),
        ("a\u202db\u202a\u202b\u202cc.txt", "abc.txt"),  # overrides, embeddings, pop
        ("\u2066x\u2067\u2068y\u2069.doc", "xy.doc"),  # isolates
        ("r\u200e\u200f\u061c.pdf", "r.pdf"),  # marks
        ("zero\u200b\u200c\u200d\u2060\ufeff.txt", "zero.txt"),  # zero-width, word joiner, BOM
        ("soft\u00adhyphen.txt", "softhyphen.txt"),
        ("tag\U000e0041\U000e007f.txt", "tag.txt"),
        ("c1\u0085\u009b.txt", "c1_.txt"),  # C1 controls: a run becomes one "_", as C0 controls do
        ("line\u2028para\u2029.txt", "line_para_.txt"),
        ("\u202e\u2066", "attachment-3.pdf"),  # nothing left
        ("plain résumé.pdf", "plain résumé.pdf"),
    ],
)
def test_format_and_control_characters_are_neutralised(name, expected):
    got = sanitize_filename(name, 3, "application/pdf")
    assert got == expected
    assert not any(unicodedata.category(c) in ("Cf", "Cc", "Zl", "Zp") for c in got)
    assert sanitize_filename(got, 3, "application/pdf") == got  # idempotent: outputs apply it again


@pytest.fixture
def world(config, db):
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    agent = make_tenant("acme").agent_key()
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "docs"}).json
    raw = (
        f"From: a@example.org\r\nTo: {inbox['address']}\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee\r\n'
        "--b\r\nContent-Type: application/pdf\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''{quote(RLO_NAME)}\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    ).encode()
    [message] = ingest(postern, raw, "a@example.org", [inbox["address"]])
    return client, headers, inbox, message


def shown_names(client, headers, inbox, message) -> tuple[str, str]:
    """The filename as the API lists it, and as a download names it."""
    url = f"/v1/inboxes/{inbox['id']}/messages/{message.id}"
    [attachment] = client.simulate_get(url, headers=headers).json["attachments"]
    link = client.simulate_post(f"{url}/attachments/{attachment['id']}/link", headers=headers).json["url"]
    disposition = client.simulate_get(link).headers["content-disposition"]
    prefix = "attachment; filename*=UTF-8''"
    assert disposition.startswith(prefix)
    return attachment["filename"], unquote(disposition.removeprefix(prefix))


def test_an_ingested_bidi_filename_is_shown_as_it_reads(world):
    client, headers, inbox, message = world
    assert Attachment.get(Attachment.message == message.id).filename == "évil.pdfgpj.exe"
    assert shown_names(client, headers, inbox, message) == ("évil.pdfgpj.exe", "évil.pdfgpj.exe")


def test_names_stored_before_the_rule_are_neutralised_on_the_way_out(world):
    client, headers, inbox, message = world
    Attachment.update(filename=RLO_NAME + "\u200b").where(Attachment.message == message.id).execute()
    assert shown_names(client, headers, inbox, message) == ("évil.pdfgpj.exe", "évil.pdfgpj.exe")
