"""Inputs and oracles for the parser fuzzers: tests/test_parser_fuzz.py runs them at CI
size, bench/parser_fuzz.py at any size (100k per target and more).

Each target is a hypothesis strategy and a ``check_*`` function that raises ``Crash`` when
the part under test misbehaved: an exception the part should have handled, a reply a
protocol does not allow, or no reply where one is owed. Everything runs against the
real parts: ``mime.parse`` and ingest on the test database, aiosmtpd with Postern's
handler and dns_builtin's server on real sockets, the API app on the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import threading

import dns.message
from hypothesis import strategies as st

from postern.core.auth import authenticate
from postern.core.config import load_config
from postern.core.db import DatabaseRunner, GroupCommitter, database
from postern.core.inboxes import create_inbox
from postern.core.mail.ingest import ingest, limits_for
from postern.core.mail.mime import MailRejected, parse
from support.dns import dns_config_text, free_udp_and_tcp_port
from support.world import INFO, make_tenant


class Crash(AssertionError):
    """The input made the part under test fail; the message says how."""


def local_config(tmp_path, env):
    """The fuzzers' system under test: a config whose DNS server would bind a free port
    (tests override the shared ``config`` fixture with it)."""
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(free_udp_and_tcp_port()))
    return load_config(path, environ=env)


def agent_inbox(postern):
    """An inbox of a fresh tenant ``acme``, created as its agent would."""
    agent = make_tenant("acme").agent_key()
    return create_inbox(postern, authenticate(agent.agent_key, "agent", INFO), INFO, {"username": "box"})[0]


def examples(ci_default: int) -> int:
    """Examples per target: ``POSTERN_FUZZ_EXAMPLES`` for a long run, else the CI size."""
    return int(os.environ.get("POSTERN_FUZZ_EXAMPLES") or ci_default)


# -- MIME ------------------------------------------------------------------------------

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "iso-2022-jp", "utf-16", "utf-7", "unicode-escape", "bogus", ""]
HEADER_NAMES = [
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
]


def _percent(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


@st.composite
def rfc2231_parameter(draw) -> str:
    """``filename*=charset'lang'%XX…`` and its continuations, with any charset and bytes."""
    name = draw(st.sampled_from(["filename", "name", "charset", "boundary"]))
    charset = draw(st.sampled_from(CHARSETS))
    data = draw(st.binary(max_size=12))
    if draw(st.booleans()):
        return f"{name}*={charset}''{_percent(data)}"
    cut = draw(st.integers(0, len(data)))
    star = draw(st.sampled_from(["*", ""]))
    return f"{name}*0*={charset}'en'{_percent(data[:cut])}; {name}*1{star}={_percent(data[cut:])}"


header_value = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.builds(
        lambda kind, params: f"{kind}; " + "; ".join(params),
        st.sampled_from(["attachment", "inline", "text/plain", "multipart/mixed", "application/pdf", "x/y", ""]),
        st.lists(rfc2231_parameter(), max_size=3),
    ),
    st.builds(
        lambda charset, enc, data: f"=?{charset}?{enc}?{data}?=",
        st.sampled_from(CHARSETS),
        st.sampled_from(["Q", "B", "X"]),
        st.text(alphabet="=ABCDEFabcdef0123456789+/_?", max_size=20),
    ),
    st.sampled_from(["<a@b>", "a@b, <c@d>", '"x" <@>', "Mon, 99 Feb 1900 99:99:99 +9999", "base64", "8bit", "1.0"]),
)


@st.composite
def mime_part(draw, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=5))
    multipart = depth < 3 and draw(st.booleans())
    lines = [f"{name}: {value}".encode("utf-8", "surrogateescape") for name, value in headers]
    if multipart:
        lines.append(b'Content-Type: multipart/mixed; boundary="zz"')
        children = draw(st.lists(mime_part(depth + 1), max_size=3))
        body = b"".join(b"--zz\r\n" + child + b"\r\n" for child in children) + b"--zz--\r\n"
    else:
        body = draw(st.one_of(st.binary(max_size=200), st.just(b"SGVsbG8=\r\n"), st.just(b"=E9t=\r\n")))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REAL_MESSAGES = [
    b"From: Ann <ann@example.org>\r\nTo: box@acme.agents.localhost\r\nSubject: hello\r\n"
    b"Message-ID: <1@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nplain body\r\n",
    b"From: b@example.org\r\nTo: box@acme.agents.localhost\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9\r\n"
    b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xc3\xa9</p>\r\n--alt--\r\n",
    b"From: c@example.org\r\nTo: box@acme.agents.localhost\r\nSubject: report\r\nIn-Reply-To: <1@example.org>\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
    b"--m\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b"--m\r\nContent-Type: application/pdf; name*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
    b"Content-Disposition: attachment; filename*0*=utf-8''r%C3%A9; filename*1=sume.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--m--\r\n",
]


@st.composite
def mutated_message(draw) -> bytes:
    """A real message with a few byte-level edits: inserted, deleted, duplicated, flipped."""
    data = bytearray(draw(st.sampled_from(REAL_MESSAGES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "flip", "header"]))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            name, value = draw(st.sampled_from(HEADER_NAMES)), draw(header_value)
            data[0:0] = f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
    return bytes(data)


mime_input = st.one_of(st.binary(max_size=2000), mime_part(), mutated_message())


def check_mime(raw: bytes, limits) -> object | None:
    """Parse: a ParsedMessage or a ``MailRejected`` (refused for good), nothing else.
    Returns the parsed message, None when it was refused."""
    try:
        parsed = parse(raw, limits)
    except MailRejected:
        return None
    except Exception as exc:
        raise Crash(f"mime.parse raised {type(exc).__name__}: {exc}") from exc
    for value in (parsed.subject, parsed.text, parsed.html, *(a.filename for a in parsed.attachments)):
        if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
            raise Crash(f"parsed text holds NUL or a surrogate: {value[:80]!r}")
    for item in parsed.attachments:
        if not item.filename or "/" in item.filename or item.filename.startswith("."):
            raise Crash(f"unsafe attachment name {item.filename!r}")
    return parsed


def check_ingest(postern, raw: bytes, address: str) -> None:
    """Parse and store in the real database: storing must succeed for whatever parsed."""
    if check_mime(raw, limits_for(postern)) is None:
        return
    try:
        ingest(postern, raw, "fuzz@example.org", [address])
    except Exception as exc:
        raise Crash(f"ingest raised {type(exc).__name__}: {exc}") from exc


# -- SMTP ------------------------------------------------------------------------------


class RunningSmtp:
    """aiosmtpd with smtp_local's own handler on a free port, on a loop in a thread,
    each session made by ``smtp_session`` as smtp_local's listener makes it."""

    def __init__(self, postern):
        from postern.core.smtp.session import smtp_session
        from postern.plugins.smtp_local.intake import make_handler

        self.runner, self.committer = DatabaseRunner(2), GroupCommitter()
        handler = make_handler(postern, self.runner, self.committer)
        limit = postern.config.mail.max_message_bytes
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)

            def session():
                return smtp_session(handler, "fuzz.localhost", limit)

            self.server = self.loop.run_until_complete(self.loop.create_server(session, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("SMTP listener did not start")

    def stop(self) -> None:
        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.committer.shutdown()
        self.runner.shutdown()


ADDRESS_PARTS = st.one_of(
    st.sampled_from(["box@acme.agents.localhost", "BOX@acme.agents.localhost", "ghost@acme.agents.localhost", ""]),
    st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.builds(lambda b: f"box{b}@acme.agents.localhost", st.sampled_from(["\x00", "\udcff", "\x7f", "\u2028", " "])),
)


def _encode(line: str) -> bytes:
    return line.encode("utf-8", "surrogateescape")


smtp_command = st.one_of(
    st.builds(lambda v, h: f"{v} {h}", st.sampled_from(["HELO", "EHLO", "helo"]), st.text(max_size=20)).map(_encode),
    st.builds(
        lambda a, p: f"MAIL FROM:<{a}>{p}",
        ADDRESS_PARTS,
        st.sampled_from(["", " SMTPUTF8", " SIZE=1", " BODY=8BITMIME", " X=Y"]),
    ).map(_encode),
    st.builds(lambda a: f"RCPT TO:<{a}>", ADDRESS_PARTS).map(_encode),
    st.just(b"RCPT TO:<box@acme.agents.localhost>"),
    st.builds(lambda body: smtp_data(body.replace(b"\r\n.\r\n", b"\r\n..\r\n")), mime_input),
    st.sampled_from([b"RSET", b"NOOP", b"VRFY box", b"EXPN x", b"HELP", b"STARTTLS", b"AUTH PLAIN AA==", b"DATA"]),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b),
)
smtp_session = st.lists(smtp_command, max_size=10)
SMTP_REPLY = re.compile(rb"^[2345]\d\d[ -]")


def check_smtp_session(port: int, commands: list[bytes]) -> list[bytes]:
    """One connection: the commands, a terminating ``.`` (in case DATA is open) and QUIT.
    Every reply must be a well-formed SMTP reply; a handler exception (aiosmtpd turns it
    into ``500 Error: (…)``) or a 451 (a failure on our side) is a crash."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # The timeout only stops a hung listener from hanging the run; nothing is timed.
        sock.sendall(b"".join(c + b"\r\n" for c in commands) + b".\r\nQUIT\r\n")
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    replies = received.split(b"\r\n")[:-1]
    if not replies or not replies[0].startswith(b"220"):
        raise Crash(f"no greeting: {bytes(received[:200])!r}")
    for reply in replies:
        if not SMTP_REPLY.match(reply):
            raise Crash(f"malformed reply {reply[:120]!r}")
        if reply.startswith(b"500 Error: (") or reply.startswith(b"451"):
            raise Crash(f"the listener failed: {reply[:200]!r}")
    return replies


# -- DNS -------------------------------------------------------------------------------

ZONE_LABELS = [b"acme", b"agents", b"localhost"]


def _name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


@st.composite
def legal_query(draw) -> bytes:
    """A query every server must answer without FORMERR: one question whose labels are
    any octets (RFC 2181 §11), under our zone or not, of any type, and an additional
    section of records of any type (unknown ones, with empty RDATA too) and at most one OPT."""
    labels = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3))
    if draw(st.booleans()):
        labels += ZONE_LABELS
    qtype = draw(st.one_of(st.sampled_from([1, 2, 6, 15, 16, 28, 99, 255, 65280]), st.integers(1, 65535)))
    additional = []
    for _ in range(draw(st.integers(0, 3))):
        rtype = draw(st.integers(1, 65535).filter(lambda t: t != 41))
        rdata = draw(st.binary(max_size=16))
        additional.append(b"\x00" + struct.pack(">HHIH", rtype, 1, 0, len(rdata)) + rdata)
    if draw(st.booleans()):
        options = draw(st.sampled_from([b"", b"\x00\x0a\x00\x08" + b"c" * 8, b"\xff\x00\x00\x00"]))
        additional.insert(
            draw(st.integers(0, len(additional))),
            b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack(">H", len(options)) + options,
        )
    qid = draw(st.integers(0, 65535))
    flags = draw(st.sampled_from([0x0000, 0x0100, 0x0110]))
    head = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, len(additional))
    return head + _name(labels) + struct.pack(">HH", qtype, 1) + b"".join(additional)


@st.composite
def mutated_query(draw) -> bytes:
    data = bytearray(draw(legal_query()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip", "truncate"]))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            del data[at:]
    return bytes(data)


dns_packet = st.one_of(st.binary(max_size=600), mutated_query())


def _exchange(host: str, port: int, packet: bytes, tcp: bool) -> bytes | None:
    if tcp:
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(len(packet).to_bytes(2, "big") + packet)
            head = sock.recv(2)
            if len(head) < 2:
                return None  # closed without an answer
            size, reply = int.from_bytes(head, "big"), b""
            while len(reply) < size and (chunk := sock.recv(size - len(reply))):
                reply += chunk
            return reply
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(30)
        sock.sendto(packet, (host, port))
        return sock.recv(65535)


def owed_an_answer(packet: bytes) -> bool:
    """Whether a server must reply at all: not to a reply (QR set), nor to a packet without
    a full header; Postern also drops UDP queries over 4,096 bytes."""
    return len(packet) >= 12 and not packet[2] & 0x80


def check_dns(host: str, port: int, packet: bytes, tcp: bool, legal: bool) -> None:
    """A reply owed must come, carry the query's id with QR set, and parse; a legal
    query's reply must not be FORMERR (dns_builtin turns any exception into FORMERR)."""
    if not owed_an_answer(packet):
        if tcp:
            _exchange(host, port, packet, tcp)  # a TCP connection closes instead
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(packet, (host, port))  # nothing to wait for: no reply is owed
        return
    try:
        reply = _exchange(host, port, packet, tcp)
    except TimeoutError:
        raise Crash("no reply within 30 s") from None
    if reply is None or len(reply) < 12:
        raise Crash(f"no reply (got {reply!r})")
    if reply[:2] != packet[:2] or not reply[2] & 0x80:
        raise Crash(f"reply has the wrong id or no QR bit: {reply[:12].hex()}")
    rcode = reply[3] & 0x0F
    if legal:
        if rcode == 1:
            raise Crash(f"FORMERR for a legal query {packet.hex()}")
        try:
            dns.message.from_wire(reply, question_only=True)
        except Exception as exc:
            raise Crash(f"unparseable reply to a legal query: {exc}") from exc


# -- JSON bodies -----------------------------------------------------------------------

# Strings no UTF-8 encoder accepts: a lone surrogate (JSON's "\ud800" escape parses to one),
# alone, inside ordinary text, or as a pair in the wrong order. Send them with
# ``json.dumps`` (ASCII escapes): they have no UTF-8 form to send raw.
unencodable_text = st.builds(
    lambda before, bad, after: before + bad + after,
    st.text(max_size=6),
    st.one_of(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        st.sampled_from(["\ud800", "\udfff", "\udc00\ud800", "\udcff"]),
    ),
    st.text(max_size=6),
)

# Percent-encoded query values whose bytes are not UTF-8: a surrogate's bytes, overlong
# and truncated sequences, stray continuation and 0xFE/0xFF bytes, and random bytes.
_NOT_UTF8 = [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\x80", b"\xe2\x82", b"\x80", b"\xfe", b"\xff", b"\xf8\x88\x80\x80"]


def _is_not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


invalid_utf8_query_value = st.builds(
    lambda before, bad, after: _percent(before + bad + after),
    st.binary(max_size=4).filter(lambda b: not _is_not_utf8(b)),
    st.one_of(st.sampled_from(_NOT_UTF8), st.binary(min_size=1, max_size=6).filter(_is_not_utf8)),
    st.sampled_from([b"", b"a", b"\xc3\xa9"]),
)

json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=30),
        unencodable_text,
        st.sampled_from(["", "\x00", "inbox", "a@b.c", "https://example.org/", "2026-01-01T00:00:00Z", "x" * 300]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), unencodable_text), children, max_size=4),
    ),
    max_leaves=12,
)


def body_for(field_names: list[str]):
    """Random JSON, or an object with the operation's own field names (and a stray one)
    holding random JSON, so validation reaches past the first check."""
    named = st.dictionaries(st.sampled_from([*field_names, "unknown_field"]), json_value, max_size=len(field_names) + 1)
    return st.one_of(json_value, named) if field_names else json_value


def check_json_response(resp) -> None:
    """No 5xx, and every error in the documented envelope."""
    if resp.status_code >= 500:
        raise Crash(f"{resp.status_code}: {resp.text[:300]}")
    if resp.status_code >= 400:
        try:
            error = json.loads(resp.text)["error"]
        except (ValueError, KeyError, TypeError):
            raise Crash(f"{resp.status_code} without the error envelope: {resp.text[:200]}") from None
        if not {"type", "code", "message", "request_id"} <= set(error):
            raise Crash(f"error envelope incomplete: {error}")


def close_thread_connection() -> None:
    database.close()


def fill_path(path: str, ids: dict[str, str]) -> str:
    """``path`` with each ``{param}`` replaced by the id of its kind from ``ids``."""
    from test_tenancy import PATH_PARAM, id_kind

    return PATH_PARAM.sub(lambda m: ids[id_kind(path, m.group(1))[0]], path)


def smtp_data(body: bytes) -> bytes:
    """A DATA command with its body, as ``smtp_command`` sends it."""
    return b"DATA\r\n" + body + b"\r\n."


def plain_query() -> bytes:
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + _name(ZONE_LABELS) + struct.pack(">HH", 15, 1)
