"""Property: whatever text goes into a header Postern writes, the wire carries exactly the
header fields composed, and a reader decodes each value back to the text that went in.

Inputs mix encoded words (in several charsets, some decoding to CR/LF), folding
sequences, words longer than a line, quoting and address specials, and text in several
scripts. A value with a control character must be refused, naming its field; any other
must round-trip. ``POSTERN_FUZZ_EXAMPLES`` sets the size of a longer run.
"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
from collections import Counter
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import examples

from postern.core.errors import InvalidInput
from postern.core.mail import headers
from postern.core.mail.compose import SendRequest, build_mime
from postern.core.mail.mime import Mailbox

CHARSETS = ["utf-8", "iso-8859-1", "koi8-r", "shift_jis", "utf-16", "us-ascii", "bogus"]
SENDER = Mailbox("alice@acme.agents.localhost", "Alice")
COMPOSED = ("from", "to", "cc", "subject", "date", "message-id", "x-fuzz", "mime-version", "content-type")


def encoded_word(text: str, charset: str, kind: str) -> str:
    data = text.encode(charset if charset != "bogus" else "utf-8", "replace")
    payload = base64.b64encode(data) if kind in "bB" else quopri.encodestring(data, header=True).replace(b"?", b"=3F")
    return f"=?{charset}?{kind}?{payload.decode('ascii').replace(chr(10), '')}?="


WORDS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
ENCODED = st.builds(
    encoded_word,
    st.one_of(WORDS, st.sampled_from(["\r\nBcc: evil@attacker.example", "a\rb", "x\ny", "\u2028", "\x85"])),
    st.sampled_from(CHARSETS),
    st.sampled_from("bBqQ"),
)
PIECES = st.one_of(
    ENCODED,
    WORDS,
    st.sampled_from([" ", "  ", "=?", "?=", "=?utf-8?q?", '"', "\\", "<>", ", ", "@", "(", ")", ":"]),
    st.text("abcdefghij", min_size=70, max_size=120),  # longer than a folded line
)
#: Folding and other line breaks or controls, as a sender or a stored subject may carry them.
BREAKS = st.sampled_from(["\r\n ", "\r\n\t", "\n ", "\t", "\r", "\x00", "\x0b", "\x85", "\u2028", "\x7f"])
CLEAN = st.lists(PIECES, max_size=10).map("".join).filter(lambda value: len(value) <= 998)
ANY = st.lists(st.one_of(PIECES, BREAKS), max_size=10).map("".join).filter(lambda value: len(value) <= 998)
FIELDS = ("subject", "value", "name", "other")


def refused(value: str) -> bool:
    return bool(headers.CONTROL.search(value))


def wire_names(raw: bytes) -> Counter:
    names = Counter(name.lower() for name in BytesHeaderParser(policy=compat32).parsebytes(raw).keys())
    names.pop("content-transfer-encoding", None)
    return names


def display_name(raw: bytes, header: str) -> str:
    """The display name as RFC 2047 reads it (Python 3.11's address parser keeps the
    whitespace between adjacent encoded words, which RFC 2047 drops)."""
    value = email.message_from_bytes(raw, policy=compat32)[header].replace("\r\n", "")
    if "=?" not in value:
        return email.message_from_bytes(raw, policy=email.policy.default)[header].addresses[0].display_name
    return str(make_header(decode_header(value.rpartition(" <")[0])))


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.fixed_dictionaries({field: CLEAN for field in FIELDS}),
    dirty=st.none() | st.tuples(st.sampled_from(FIELDS), ANY),
)
def test_the_wire_carries_exactly_the_composed_headers_and_the_text(texts, dirty):
    if dirty is not None:
        texts[dirty[0]] = dirty[1]
    check(**texts)


def check(subject: str, value: str, name: str, other: str) -> None:
    name, other = headers.display_name(name), headers.display_name(other)
    request = SendRequest(
        to=(Mailbox("bob@example.org", name),),
        cc=(Mailbox("carol@example.org", other), Mailbox("dan@example.org", "Dan")),
        bcc=(),
        subject=subject,
        text="hi",
        html="",
        reply_to=(),
        headers=(("X-Fuzz", value),),
        attachments=(),
    )
    try:
        raw = build_mime(SENDER, request, message_id="<m@acme.agents.localhost>")
    except InvalidInput as exc:
        fields = {"subject": [subject], "headers": [value], "to": [name], "cc": [other]}
        assert any(refused(v) for v in fields[exc.field]), (exc.field, exc)
        return
    assert not any(refused(v) for v in (subject, value, name, other))
    assert wire_names(raw) == Counter(COMPOSED)
    block = raw.split(b"\r\n\r\n", 1)[0]
    assert block.isascii() and all(len(line) <= 998 for line in block.split(b"\r\n"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(message["Subject"]) == subject
    assert str(message["X-Fuzz"]) == value
    assert display_name(raw, "To") == name
    assert [a.addr_spec for a in message["Cc"].addresses] == ["carol@example.org", "dan@example.org"]


@pytest.mark.parametrize(
    "subject",
    [
        "",
        " leading and trailing ",
        "tabs\tare refused",
        "=?utf-8?q?hi=0D=0ABcc:_evil@attacker.example?=",
        "=?bogus?q?x?= =?utf-8?b?Pz0=?=",
        "Ünïcødé " * 60,
        "😀" * 300,
        "x" * 998,
    ],
)
def test_edge_subjects(subject):
    check(subject, "v", "n", "o")
