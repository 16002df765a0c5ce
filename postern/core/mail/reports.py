"""Bounces (delivery status notifications, RFC 3464 and 6533) and complaints (abuse
feedback reports, RFC 5965) about mail Postern sent, read from the raw message so that
ingest can tie them back to the original.

Only a ``multipart/report`` whose machine-readable part says what it is counts: mail that
merely reads like a bounce ("Undelivered Mail Returned to Sender" in plain text), a read
receipt, or a bounce forwarded as an attachment is ordinary mail, because acting on a
report suppresses recipients. Everything in a report is untrusted and often malformed, so
reading one is best effort within fixed limits and never raises: anything that cannot be
read is None, a report read in part is a partial ``Report``.

The envelope sender of outbound mail is a VERP address, ``bounce-<message id>@<domain>``,
so a bounce that quotes nothing of the original still names it by where it was sent.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser

from postern.core.errors import InvalidInput
from postern.core.ids import well_formed
from postern.core.mail.compose import validate_address
from postern.core.mail.mime import HEADER_ERRORS, MAX_MSGID, TOLERANT, MailLimits, clean, first_msgid, one_line_text
from postern.core.names import InvalidName, normalise_domain

log = logging.getLogger("postern.ingest")

MAX_BYTES = MailLimits().max_bytes
#: Parts the parser may create. Each header block of a delivery-status part is one, so
#: this bounds the work a DSN listing 100,000 recipients can cost (seconds otherwise).
MAX_PARTS = 2000
MAX_DEPTH = 10
MAX_RECIPIENTS = 100
MAX_DIAGNOSTIC = 500

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
#: What a missing Action means, by the status class, and the reverse: "failed" means the
#: reporting MTA gave up for good, so it is permanent even when the status is missing.
ACTION_OF_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}
STATUS_OF_ACTION = {
    "failed": "5.0.0",
    "delayed": "4.0.0",
    "delivered": "2.0.0",
    "relayed": "2.0.0",
    "expanded": "2.0.0",
}
STATUS = re.compile(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
#: "rfc822; user@example.net", "dns; mx.example.net", "smtp; 550 5.1.1 ...".
TYPED = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9.+_-]{0,40})\s*;(.*)", re.S)
FOLD = re.compile(r"\r?\n[ \t]*")
BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")
FEEDBACK_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
HOST = re.compile(r"[A-Za-z0-9.:\[\]_-]{1,255}")
BARE_MSGID = re.compile(r"[\x21-\x7e]{1,500}")

DSN_REPORT_TYPES = {
    "delivery-status": "message/delivery-status",
    "global-delivery-status": "message/global-delivery-status",
}
DSN_PARTS = frozenset(DSN_REPORT_TYPES.values())
ARF_PART = "message/feedback-report"
RETURNED_PARTS = frozenset({"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"})
VERP_PREFIX = "bounce-"
VERP_TAG = re.compile(r"[a-z2-7]{10,32}")


@dataclass(frozen=True)
class RecipientReport:
    """What a report says about one recipient of the original message."""

    recipient: str  # Final-Recipient, else Original-Recipient; validated and lower-cased
    action: str  # failed | delayed | delivered | relayed | expanded (DSN); "complaint" (ARF)
    status: str  # enhanced status code such as "5.1.1"; "" for a complaint
    diagnostic: str  # Diagnostic-Code text (one line, at most 500 characters), or the Feedback-Type
    remote_mta: str = ""

    def permanent(self) -> bool:
        return permanent(self.status)


@dataclass(frozen=True)
class Report:
    """A bounce or a complaint, and the Message-ID of the original it quotes (as in its
    header, angle brackets kept), when it quotes one."""

    kind: str  # "bounce" | "complaint"
    original_message_id: str | None
    recipients: tuple[RecipientReport, ...]
    feedback_type: str = ""  # ARF: abuse, fraud, virus, other, not-spam, auth-failure...
    reporting_mta: str = ""


def permanent(status: str) -> bool:
    """Whether an enhanced status code is a permanent failure: only class 5. A 4.x.x
    never is, even under ``Action: failed`` (an MTA that gave up after days of temporary
    failures says so), since the same address may well accept the next message."""
    return status.startswith("5.")


class _TooManyParts(Exception):
    pass


def parse_report(raw: bytes) -> Report | None:
    """The bounce or complaint ``raw`` is, or None when it is not one (or is unreadable)."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_report takes the raw message as bytes, not {type(raw).__name__}")
    if len(raw) > MAX_BYTES:
        return None
    try:
        msg = email.message_from_bytes(bytes(raw), policy=_counting_policy())
        found = _find_report(msg)
        if found is None:
            return None
        report_type, machine, returned = found
        original = _original_message_id(returned)
        if report_type == ARF_PART:
            return _complaint(machine, returned, original)
        return _bounce(machine, original)
    except _TooManyParts:
        log.info("not read as a report: more than %d MIME parts", MAX_PARTS)
        return None
    except RecursionError:
        log.info("not read as a report: MIME structure nested too deeply")
        return None
    except Exception:  # noqa: BLE001 (a parser bug on hostile input must not fail ingest: logged, read as not a report)
        log.warning("not read as a report: the parser failed", exc_info=True)
        return None


def verp_address(message_id: str, domain: str, tag: str = "") -> str:
    """The envelope sender for outbound message ``message_id``: ``bounce-<id>@<domain>``,
    or ``bounce-<id>-<tag>@<domain>`` for a copy sent to one recipient (the tag names
    that recipient: postern.core.mail.verptag)."""
    if not well_formed(message_id, "msg"):
        raise ValueError(f"'{str(message_id)[:80]}' is not a Postern message id")
    if not isinstance(domain, str):
        raise ValueError("the VERP domain must be a string")
    if tag and VERP_TAG.fullmatch(tag) is None:
        raise ValueError("a VERP tag is 10 to 32 lower-case letters and digits")
    return f"{VERP_PREFIX}{message_id}{'-' + tag if tag else ''}@{normalise_domain(domain)}"


def verp_message_id(address: str) -> str | None:
    """The message id a VERP address names, or None."""
    parts = verp_parts(address)
    return parts[0] if parts else None


def verp_parts(address: str) -> tuple[str, str] | None:
    """(message id, tag) of a VERP address (tag "" when untagged), or None: the local
    part must be exactly ``bounce-``, a well-formed message id and optionally ``-`` and
    a tag (no case folding, nothing else around it)."""
    if not isinstance(address, str) or len(address) > 320:
        return None
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local.startswith(VERP_PREFIX):
        return None
    try:
        normalise_domain(domain)
    except InvalidName:
        return None
    candidate, _, tag = local[len(VERP_PREFIX) :].partition("-")
    if not well_formed(candidate, "msg") or (tag and VERP_TAG.fullmatch(tag) is None):
        return None
    if not tag and "-" in local[len(VERP_PREFIX) :]:
        return None  # "bounce-<id>-": an empty tag
    return candidate, tag


# -- finding the report -------------------------------------------------------------


def _counting_policy() -> email.policy.Compat32:
    """compat32 (fields are read raw, so no header parser runs on hostile values), with a
    message factory that stops the parse after ``MAX_PARTS`` parts."""
    made = 0

    class CountingMessage(Message):
        def __init__(self, policy=email.policy.compat32):
            nonlocal made
            made += 1
            if made > MAX_PARTS:
                raise _TooManyParts
            super().__init__(policy)

    return email.policy.compat32.clone(message_factory=CountingMessage)


def _find_report(msg: Message) -> tuple[str, Message, Message | None] | None:
    """The first ``multipart/report`` that is a DSN or an ARF report: the type of its
    machine-readable part, that part, and the returned message or headers. Multiparts are
    searched (a gateway may wrap the report), attached messages are not: a bounce forwarded
    as an attachment is the forwarder's mail, not a report."""
    stack = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        payload = part.get_payload()
        if not isinstance(payload, list) or part.get_content_maintype() != "multipart":
            continue
        if part.get_content_subtype() == "report":
            found = _report_parts(part, payload)
            if found is not None:
                return found
        if depth < MAX_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
    return None


def _report_parts(report: Message, children: list) -> tuple[str, Message, Message | None] | None:
    wanted = _report_type(report)
    if wanted is None:
        return None
    types = [(child.get_content_type(), child) for child in children if isinstance(child, Message)]
    machine = next((child for kind, child in types if kind == wanted or (wanted == "*" and kind in _MACHINE)), None)
    if machine is None:
        return None
    returned = next((child for kind, child in types if kind in RETURNED_PARTS), None)
    return machine.get_content_type(), machine, returned


_MACHINE = DSN_PARTS | {ARF_PART}


def _report_type(report: Message) -> str | None:
    """The machine-readable part the report-type parameter calls for; "*" when the
    parameter is missing (the part's own type decides); None for any other report
    (read receipts, TLS reports)."""
    value = report.get_param("report-type")
    if value is None:
        return "*"
    value = email.utils.collapse_rfc2231_value(value).strip().lower()
    if value == "feedback-report":
        return ARF_PART
    return DSN_REPORT_TYPES.get(value)


# -- reading the fields -------------------------------------------------------------


def _blocks(part: Message, limit: int):
    """The header blocks of a machine-readable part, each as ``{lower-cased name: value}``
    (first occurrence wins) plus the list of all its pairs, at most ``limit`` blocks.

    The parser splits ``message/delivery-status`` into one message per block; for any other
    ``message/*`` part it makes the first block the headers of one message and leaves the
    rest as its body, and a part it did not split is text: all three are read here."""
    payload = part.get_payload()
    messages = payload if isinstance(payload, list) else [part]
    count = 0
    for message in messages:
        if not isinstance(message, Message):
            continue
        if message is not part:
            pairs = list(message.raw_items())
            if pairs:
                count += 1
                yield _fields(pairs)
                if count >= limit:
                    return
        body = message.get_payload(decode=True) if not message.is_multipart() else None
        if not body:
            continue
        text = body.decode("utf-8", "surrogateescape")
        # Bounded: past the cap, the rest is one chunk (its first block read, the rest not).
        for chunk in BLANK_LINE.split(text, maxsplit=2 * limit):
            pairs = list(email.message_from_string(chunk.lstrip("\r\n"), policy=email.policy.compat32).raw_items())
            if pairs:
                count += 1
                yield _fields(pairs)
                if count >= limit:
                    return


def _fields(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    cleaned = [(name.strip().lower(), _one_line(value)) for name, value in pairs]
    first: dict[str, str] = {}
    for name, value in cleaned:
        first.setdefault(name, value)
    return first, cleaned


def _one_line(value) -> str:
    return " ".join(one_line_text(FOLD.sub(" ", clean(str(value)))).split())


def _typed(value: str) -> str:
    """The value of a typed field ("dns; mx.example.net" -> "mx.example.net")."""
    match = TYPED.match(value)
    return (match.group(2) if match else value).strip()


def _host(value: str | None) -> str:
    """An MTA name without its type and comment: "dns; mx.example.net. (192.0.2.1)"."""
    if not value:
        return ""
    token = _typed(value).split("(", 1)[0].split()
    host = token[0].rstrip(".").lower() if token else ""
    return host if HOST.fullmatch(host) else ""


def _address(value: str | None) -> str | None:
    """A recipient as Postern writes addresses, or None. Postern only sends to addresses
    ``validate_address`` accepts, so a report about any other concerns none of its mail."""
    if not value:
        return None
    address = _typed(value).strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    try:
        return validate_address(address, "recipient")
    except InvalidInput:
        return None


def _original_message_id(returned: Message | None) -> str | None:
    headers = _returned_headers(returned)
    if headers is None:
        return None
    value = _first_raw(headers, "message-id")
    if value is None:
        return None
    found = first_msgid(value)
    if found is not None:
        return found
    # Some senders write no angle brackets (RFC 5965's own example does): keep it as is.
    bare = _one_line(value)
    return bare[:MAX_MSGID] if BARE_MSGID.fullmatch(bare) else None


def _returned_headers(returned: Message | None) -> Message | None:
    """The header block of the returned message, whether the parser made it a message
    (``message/rfc822``) or left it as text (``text/rfc822-headers``)."""
    if returned is None:
        return None
    payload = returned.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    data = returned.get_payload(decode=True)
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(data) if data else None


def _first_raw(msg: Message, name: str) -> str | None:
    return next((value for key, value in msg.raw_items() if key.lower() == name), None)


# -- the two kinds --------------------------------------------------------------------


def _bounce(machine: Message, original: str | None) -> Report | None:
    reporting_mta = ""
    recipients: list[RecipientReport] = []
    # One block more than the cap: the per-message block comes first.
    for fields, _ in _blocks(machine, MAX_RECIPIENTS + 1):
        if not reporting_mta:
            reporting_mta = _host(fields.get("reporting-mta"))
        recipient = _recipient(fields)
        if recipient is not None and len(recipients) < MAX_RECIPIENTS:
            recipients.append(recipient)
    if not recipients:
        return None  # a DSN naming no recipient gives nothing to act on
    return Report("bounce", original, tuple(recipients), reporting_mta=reporting_mta)


def _recipient(fields: dict[str, str]) -> RecipientReport | None:
    if "final-recipient" not in fields and "original-recipient" not in fields:
        return None  # the per-message block, or a stray one
    address = _address(fields.get("final-recipient")) or _address(fields.get("original-recipient"))
    if address is None:
        return None
    diagnostic = _typed(fields.get("diagnostic-code", ""))
    words = fields.get("action", "").lower().split()
    action = words[0] if words else ""
    match = STATUS.match(fields.get("status", "").strip()) or STATUS.search(diagnostic)
    status = match.group(0) if match else ""
    if action not in ACTIONS:
        action = ACTION_OF_CLASS.get(status[:1], "")
        if not action:
            return None
    status = status or STATUS_OF_ACTION[action]
    return RecipientReport(
        recipient=address,
        action=action,
        status=status,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        remote_mta=_host(fields.get("remote-mta")),
    )


def _complaint(machine: Message, returned: Message | None, original: str | None) -> Report:
    fields: dict[str, str] = {}
    rcpt_to: list[str] = []
    # The report is one block; one cut by a stray blank line is read whole all the same.
    for first, pairs in _blocks(machine, 20):
        for name, value in first.items():
            fields.setdefault(name, value)
        rcpt_to.extend(value for name, value in pairs if name == "original-rcpt-to")
    words = fields.get("feedback-type", "").lower().split()
    feedback_type = words[0] if words and FEEDBACK_TYPE.fullmatch(words[0]) else "other"
    addresses = [a for a in map(_address, rcpt_to[:MAX_RECIPIENTS]) if a] or _embedded_to(returned)
    recipients = tuple(
        RecipientReport(recipient=address, action="complaint", status="", diagnostic=feedback_type)
        for address in dict.fromkeys(addresses)
    )
    return Report("complaint", original, recipients, feedback_type, _host(fields.get("reporting-mta")))


def _embedded_to(returned: Message | None) -> list[str]:
    """The To addresses of the original, parsed by the project's structured header
    parser (``getaddresses`` here lacks the CVE-2023-27043 fix)."""
    headers = _returned_headers(returned)
    value = _first_raw(headers, "to") if headers is not None else None
    if value is None:
        return []
    try:
        addresses = TOLERANT.header_fetch_parse("To", value).addresses
    except (*HEADER_ERRORS, AttributeError):
        return []
    return [a for a in (_address(clean(m.addr_spec)) for m in addresses[:MAX_RECIPIENTS] if m.addr_spec) if a]
