"""MIME parsing of untrusted mail: bodies, attachments, limits, and no crash on junk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import examples

from postern.core.mail.mime import MailLimits, MailRejected, parse, sanitize_filename
from postern.core.mail.threads import normalize_subject

LIMITS = MailLimits(max_bytes=100_000, max_depth=5, max_parts=20)


def test_bodies_addresses_and_headers():
    raw = (
        b"From: =?utf-8?q?Caf=C3=A9?= <Cafe@Example.ORG>\r\nTo: a@x.org, B <b@x.org>\r\nCc: c@x.org\r\n"
        b"Subject: =?utf-8?b?SGVsbG8g8J+Riw==?=\r\nMessage-ID: <m1@x.org>\r\nIn-Reply-To: <p@x.org>\r\n"
        b"References: <r1@x.org> <p@x.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain; charset=latin-1\r\n\r\nna\xefve\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--a--\r\n"
    )
    parsed = parse(raw, LIMITS)
    assert parsed.sender.address == "cafe@example.org" and parsed.sender.name == "Café"
    assert [m.address for m in parsed.to] == ["a@x.org", "b@x.org"] and parsed.cc[0].address == "c@x.org"
    assert parsed.subject == "Hello 👋" and parsed.message_id == "<m1@x.org>"
    assert parsed.in_reply_to == "<p@x.org>" and parsed.references == ["<r1@x.org>", "<p@x.org>"]
    assert parsed.text == "naïve" and parsed.html == "<b>hi</b>"  # the CRLF before a boundary belongs to it
    assert parsed.date.isoformat() == "2026-11-23T09:00:00" and parsed.attachments == []


def test_attachments_inline_and_content_id():
    raw = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/html\r\n\r\n<img src=cid:logo>\r\n"
        b"--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Disposition: inline\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n"
    )
    [att] = parse(raw, LIMITS).attachments
    assert (att.content_id, att.inline, att.content_type) == ("<logo>", True, "image/png")
    assert att.data == b"\x89PNG\r\n\x1a\n" and att.filename == "attachment-1.png"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("..hidden", "hidden"),
        ("a\x00b\nc.txt", "ab_c.txt"),
        ('x<>:"|?*.pdf', "x_.pdf"),
        ("", "attachment-3.pdf"),
        (None, "attachment-3.pdf"),
        ("é" * 300 + ".pdf", None),
    ],
)
def test_filenames_are_sanitised(name, expected):
    got = sanitize_filename(name, 3, "application/pdf")
    if expected is None:
        assert len(got.encode()) <= 255 and got.endswith(".pdf")
    else:
        assert got == expected


def nested(depth: int) -> bytes:
    head = b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode() for i in range(depth))
    tail = b"".join(f"\r\n--b{i}--".encode() for i in reversed(range(depth)))
    return b"Subject: deep\r\n" + head + b"Content-Type: text/plain\r\n\r\nx" + tail + b"\r\n"


def test_limits():
    with pytest.raises(MailRejected) as too_big:
        parse(b"Subject: x\r\n\r\n" + b"x" * 100_001, LIMITS)
    assert too_big.value.smtp_code.startswith("552")
    with pytest.raises(MailRejected) as too_deep:
        parse(nested(8), LIMITS)
    assert too_deep.value.code == "mime_too_deep" and too_deep.value.smtp_code.startswith("554")
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(30))
    with pytest.raises(MailRejected) as too_many:
        parse(b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n", LIMITS)
    assert too_many.value.code == "mime_too_many_parts"
    assert parse(nested(4), LIMITS).text.strip() == "x"


def test_broken_headers_do_not_lose_the_message():
    raw = (
        b"From: <<<@@@>>>\r\nTo: ;;;\r\nDate: yesterday-ish\r\nSubject: ok\r\n"
        b"Content-Type: text/plain; charset=klingon\r\n\r\nbody\r\n"
    )
    parsed = parse(raw, LIMITS)
    assert parsed.subject == "ok" and parsed.text.strip() == "body" and parsed.date is None


@pytest.mark.parametrize(
    "subject, normal",
    [("Re: RE: Fwd: Hello  world", "hello world"), ("AW: [2] Sv: hi", "[2] sv: hi"), ("Re[3]: x", "x")],
)
def test_subject_normalisation(subject, normal):
    assert normalize_subject(subject) == normal


# Health checks time data generation: a loaded CI box must not fail a parser test.
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=4000))
def test_junk_never_crashes_the_parser(data):
    try:
        parse(data, LIMITS)
    except MailRejected:
        pass  # a clear refusal is a fine answer to junk


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=x\r\n",
                b"--x\r\n",
                b"--x--\r\n",
                b"\r\n",
                b"=?utf-8?b?",
                b"\xff",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Subject: ",
                b"From: a@b\r\n",
                b"Content-Disposition: attachment; filename*=utf-8''%ff%fe\r\n",
            ]
        ),
        max_size=60,
    )
)
def test_mime_shaped_junk_never_crashes_the_parser(pieces):
    try:
        parse(b"".join(pieces), LIMITS)
    except MailRejected:
        pass


# Address headers: the plain-form fast path must give what the email package's parser gives.
_LOCAL = st.sampled_from(["a", "Ann.Lee", "a+tag", "o'brien", "x_y", "a.b.c", "1", "a#b", "a/b", "{}", "A-Z"])
_DOMAIN = st.sampled_from(["example.org", "Example.ORG", "x-y.example", "a.b.c.d", "localhost", "-x.org", "1.2"])
_NAME = st.sampled_from(["", "Ann", "Ann Lee", "ann lee 2", "A B C", "Bob", "X1"])
_TRICKY = st.sampled_from(
    [
        '"Ann, Lee" <a@x.org>',
        "Ann (work) <a@x.org>",
        "=?utf-8?q?Caf=C3=A9?= <c@x.org>",
        "undisclosed-recipients:;",
        "a@[127.0.0.1]",
        "Ann  Lee <a@x.org>",
        "<a@x.org",
        "a@",
        "@x.org",
        "a..b@x.org",
        ".a@x.org",
        "a@x..org",
        "Dr. Who <w@x.org>",
        "a@x.org,",
        ", a@x.org",
        "",
        " ",
        "Ann <a@x.org> (c)",
        "a@x.org\r\n b@x.org",
        "\u00e9l\u00e8ve@x.org",
        "Ann\t<a@x.org>",
        "<<a@x.org>>",
        "a@x.org;b@x.org",
        "A <a@x.org>, B <b@x.org>",
    ]
)


@st.composite
def _address_header(draw):
    items = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            items.append(draw(_TRICKY))
            continue
        address = f"{draw(_LOCAL)}@{draw(_DOMAIN)}"
        name = draw(_NAME)
        form = draw(st.sampled_from(["bare", "angle", "named"]))
        items.append(
            address if form == "bare" else f"<{address}>" if form == "angle" or not name else f"{name} <{address}>"
        )
    separator = draw(st.sampled_from([", ", ",", ",\r\n ", " , "]))
    return separator.join(items)


@settings(max_examples=examples(600), deadline=None)
@given(value=_address_header())
def test_plain_address_fast_path_agrees_with_the_email_parser(value):
    import email

    from postern.core.mail import mime

    msg = email.message_from_string(f"To: {value}\r\n\r\n", policy=mime.TOLERANT)
    slow = mime._mailboxes(msg, "To")
    fast = mime._plain_mailboxes(next(v for n, v in msg.raw_items() if n == "To"))
    if fast is not None:
        assert fast == slow, value


def test_plain_address_fast_path_takes_the_common_forms():
    from postern.core.mail import mime

    assert mime._plain_mailboxes("Ann Lee <Ann@Example.ORG>,\r\n b@x.org") == [
        mime.Mailbox("ann@example.org", "Ann Lee"),
        mime.Mailbox("b@x.org", ""),
    ]
    for value in ('"Ann, Lee" <a@x.org>', "=?utf-8?q?Caf=C3=A9?= <c@x.org>", "Ann (work) <a@x.org>", "a@[1.2.3.4]"):
        assert mime._plain_mailboxes(value) is None, value
