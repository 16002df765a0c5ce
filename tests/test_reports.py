"""Bounces (DSN) and complaints (ARF) read by postern.core.mail.reports, from samples shaped
like what Postfix, Gmail, Exim and RFC 5965 send, and from input that is none of those."""

from __future__ import annotations

import random
import time

import pytest

from postern.core.ids import new_id
from postern.core.mail.reports import (
    MAX_RECIPIENTS,
    RecipientReport,
    Report,
    parse_report,
    permanent,
    verp_address,
    verp_message_id,
)

MSG_ID = new_id("msg")
ORIGINAL_ID = f"<{MSG_ID}@agents.example.org>"
VERP = f"bounce-{MSG_ID}@agents.example.org"

POSTFIX_DSN = f"""Return-Path: <>
Received: by mx.example.net (Postfix)
\tid 4Q2B1c0x2Fz9sWJ; Mon,  7 Dec 2026 05:00:01 +0000 (UTC)
Date: Mon,  7 Dec 2026 05:00:01 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4Q2B1c0x2Fz9sWJ.1796619601/mx.example.net"
Content-Transfer-Encoding: 7bit
Message-Id: <4Q2B1d2kQjz9sWK@mx.example.net>

This is a MIME-encapsulated message.

--4Q2B1c0x2Fz9sWJ.1796619601/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<nobody@example.com>: host mail.example.com[203.0.113.25] said: 550 5.1.1
    <nobody@example.com>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4Q2B1c0x2Fz9sWJ.1796619601/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4Q2B1c0x2Fz9sWJ
X-Postfix-Sender: rfc822; {VERP}
Arrival-Date: Mon,  7 Dec 2026 05:00:00 +0000 (UTC)

Final-Recipient: rfc822; Nobody@Example.com
Original-Recipient: rfc822;nobody@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.com
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>: Recipient address
    rejected: User unknown in virtual mailbox table

--4Q2B1c0x2Fz9sWJ.1796619601/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
Received: from agents.example.org (agents.example.org [198.51.100.7])
\tby mx.example.net (Postfix) with ESMTPS id 4Q2B1c0x2Fz9sWJ
\tfor <nobody@example.com>; Mon,  7 Dec 2026 05:00:00 +0000 (UTC)
From: Support Agent <support@agents.example.org>
To: nobody@example.com
Subject: Your ticket
Message-ID: {ORIGINAL_ID}
Date: Mon, 07 Dec 2026 05:00:00 +0000

--4Q2B1c0x2Fz9sWJ.1796619601/mx.example.net--
""".replace("\n", "\r\n").encode()

GMAIL_DSN = f"""Delivered-To: {VERP}
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {VERP}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <6750f0a1.050a0220.1b2c3.0001.GMR@mx.google.com>
Date: Mon, 07 Dec 2026 05:10:00 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000f1e2d3c4b5a69788"; report-type=delivery-status

--000000000000f1e2d3c4b5a69788
Content-Type: multipart/related; boundary="000000000000f1e2d3c4b5a6978a"

--000000000000f1e2d3c4b5a6978a
Content-Type: multipart/alternative; boundary="000000000000f1e2d3c4b5a6978b"

--000000000000f1e2d3c4b5a6978b
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to gone@example.net because the address couldn't be found.

--000000000000f1e2d3c4b5a6978b
Content-Type: text/html; charset="UTF-8"

<html><body><p>Address not found</p></body></html>

--000000000000f1e2d3c4b5a6978b--
--000000000000f1e2d3c4b5a6978a--
--000000000000f1e2d3c4b5a69788
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; agents.example.org
Arrival-Date: Mon, 07 Dec 2026 05:09:58 -0800 (PST)
X-Original-Message-ID: {ORIGINAL_ID}

Final-Recipient: rfc822; gone@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net. (203.0.113.9, the server for the domain
 example.net.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
 not exist. Please try double-checking the recipient's email address for typos
 or unnecessary spaces. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser
Last-Attempt-Date: Mon, 07 Dec 2026 05:10:00 -0800 (PST)

Final-Recipient: rfc822; slow@example.org
Action: delayed
Status: 4.4.1
Remote-MTA: dns; mx.example.org. (198.51.100.20)
Diagnostic-Code: smtp; 421 4.4.1 Connection timed out
Will-Retry-Until: Wed, 09 Dec 2026 05:10:00 -0800 (PST)

Final-Recipient: rfc822; full@example.org
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

--000000000000f1e2d3c4b5a69788
Content-Type: message/rfc822

Return-Path: <{VERP}>
From: Support Agent <support@agents.example.org>
To: gone@example.net, slow@example.org, full@example.org
Subject: Your ticket
Message-ID: {ORIGINAL_ID}
Date: Mon, 07 Dec 2026 05:09:57 -0800
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello.

--000000000000f1e2d3c4b5a69788--
""".encode()

DELAYED_DSN = f"""From: Mail Delivery System <Mailer-Daemon@relay.example.net>
To: {VERP}
Subject: Warning: message 1tHq9z-000AbC-2x delayed 24 hours
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=1796619601-eximdsn-1234
X-Failed-Recipients: later@example.com

--1796619601-eximdsn-1234
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on relay.example.net.

--1796619601-eximdsn-1234
Content-type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Action: delayed
Final-Recipient: rfc822;later@example.com
Status: 4.4.1
Remote-MTA: dns; mx.example.com
Will-Retry-Until: Wed, 09 Dec 2026 05:00:00 +0000

--1796619601-eximdsn-1234
Content-type: text/rfc822-headers

Message-ID: {ORIGINAL_ID}
From: support@agents.example.org
To: later@example.com

--1796619601-eximdsn-1234--
""".encode()

# RFC 5965 Appendix B.2, as printed there.
ARF_RFC5965 = b"""From: <abusedesk@example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <abuse@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
about this format please see http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <somespammer@example.net>
Original-Rcpt-To: <user@example.com>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com;
               spf=fail smtp.mail=somespammer@example.com
Reported-Domain: example.net
Reported-Uri: http://example.net/earn_money.html
Reported-Uri: mailto:user@example.com
Removal-Recipient: user@example.com

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net
        [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
        Thu, 08 Mar 2005 14:00:00 -0400
To: <Undisclosed Recipients>
Subject: Earn money
MIME-Version: 1.0
Content-type: text/plain
Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
Date: Thu, 02 Sep 2004 12:31:03 -0500

Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
--part1_13d.2e68ed54_boundary--
"""

ARF_NO_RCPT_TO = f"""From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: fbl@agents.example.org
Subject: FW: Your ticket
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="----=_arf_7"

------=_arf_7
Content-Type: text/plain

This is an email abuse report for an email message from agents.example.org.

------=_arf_7
Content-Type: message/feedback-report

Feedback-Type: Abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{VERP}>
Arrival-Date: Mon, 07 Dec 2026 05:00:00 +0000
Reported-Domain: agents.example.org

------=_arf_7
Content-Type: message/rfc822

From: Support Agent <support@agents.example.org>
To: "Pat Reader" <Pat.Reader@Example.COM>
Subject: Your ticket
Message-ID: {ORIGINAL_ID}

Hello.
------=_arf_7--
""".encode()

ORDINARY = b"""From: Alice <alice@example.com>
To: agent@agents.example.org
Subject: Re: Undelivered Mail Returned to Sender
Message-ID: <ordinary-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=X

--X
Content-Type: text/plain

Final-Recipient: rfc822; nobody@example.com
Action: failed
Status: 5.1.1

--X--
"""

PLAIN_BOUNCE = f"""From: MAILER-DAEMON@old.example.net
To: {VERP}
Subject: Undelivered Mail Returned to Sender
Content-Type: text/plain

Hi. This is the qmail-send program at old.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.com>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Message-ID: {ORIGINAL_ID}
""".encode()


def dsn(blocks: str, *, report_type: str = "delivery-status", part: str = "message/delivery-status") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\nMIME-Version: 1.0\n"
        f"Content-Type: multipart/report; report-type={report_type}; boundary=B\n\n"
        f"--B\nContent-Type: text/plain\n\nReport.\n\n--B\nContent-Type: {part}\n\n"
        f"Reporting-MTA: dns; mx.example.net\n\n{blocks}\n--B--\n"
    ).encode()


def test_postfix_dsn_user_unknown_with_rfc822_headers():
    report = parse_report(POSTFIX_DSN)
    assert report == Report(
        kind="bounce",
        original_message_id=ORIGINAL_ID,
        recipients=(
            RecipientReport(
                recipient="nobody@example.com",
                action="failed",
                status="5.1.1",
                diagnostic="550 5.1.1 <nobody@example.com>: Recipient address rejected: "
                "User unknown in virtual mailbox table",
                remote_mta="mail.example.com",
            ),
        ),
        reporting_mta="mx.example.net",
    )
    assert report.recipients[0].permanent()
    # The bounce was sent to the VERP address: it names the same message.
    assert verp_message_id(VERP) == MSG_ID


def test_gmail_dsn_with_returned_message_and_several_recipients():
    report = parse_report(GMAIL_DSN)
    assert report is not None and report.kind == "bounce"
    assert report.original_message_id == ORIGINAL_ID
    assert report.reporting_mta == "googlemail.com"
    by_address = {r.recipient: r for r in report.recipients}
    assert list(by_address) == ["gone@example.net", "slow@example.org", "full@example.org"]
    gone, slow, full = by_address.values()
    assert (gone.action, gone.status, gone.remote_mta) == ("failed", "5.1.1", "mx.example.net")
    assert gone.diagnostic.startswith("550-5.1.1 The email account that you tried to reach does not exist.")
    assert "\n" not in gone.diagnostic and "  " not in gone.diagnostic
    assert (slow.action, slow.status, slow.remote_mta) == ("delayed", "4.4.1", "mx.example.org")
    assert (full.action, full.status) == ("failed", "5.2.2")
    assert [r.permanent() for r in report.recipients] == [True, False, True]


def test_delayed_only_dsn_is_not_permanent():
    report = parse_report(DELAYED_DSN)
    assert report is not None
    assert report.original_message_id == ORIGINAL_ID
    assert report.reporting_mta == "relay.example.net"
    [later] = report.recipients
    assert (later.recipient, later.action, later.status) == ("later@example.com", "delayed", "4.4.1")
    assert not later.permanent() and not permanent(later.status)


def test_arf_abuse_report_from_rfc5965():
    report = parse_report(ARF_RFC5965)
    assert report == Report(
        kind="complaint",
        # RFC 5965's example writes its Message-ID without angle brackets: kept as written.
        original_message_id="8787KJKJ3K4J3K4J3K4J3.mail@example.net",
        recipients=(RecipientReport("user@example.com", "complaint", "", "abuse"),),
        feedback_type="abuse",
        reporting_mta="mail.example.com",
    )
    assert not report.recipients[0].permanent()


def test_arf_without_original_rcpt_to_takes_the_embedded_to():
    report = parse_report(ARF_NO_RCPT_TO)
    assert report is not None and report.kind == "complaint"
    assert report.feedback_type == "abuse"  # lower-cased
    assert report.original_message_id == ORIGINAL_ID
    assert [r.recipient for r in report.recipients] == ["pat.reader@example.com"]
    assert report.recipients[0].diagnostic == "abuse"


def test_arf_with_unusable_to_is_a_complaint_without_recipients():
    raw = ARF_RFC5965.replace(b"Original-Rcpt-To: <user@example.com>\n", b"")
    report = parse_report(raw)
    assert report is not None and report.kind == "complaint"
    assert report.recipients == ()  # "To: <Undisclosed Recipients>" names nobody
    assert report.original_message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"


def test_arf_feedback_types():
    for given, expected in [("not-spam", "not-spam"), ("Fraud", "fraud"), ("", "other"), ("<bad>", "other")]:
        raw = ARF_RFC5965.replace(b"Feedback-Type: abuse", f"Feedback-Type: {given}".encode())
        report = parse_report(raw)
        assert report is not None and report.feedback_type == expected, given


@pytest.mark.parametrize("raw", [ORDINARY, PLAIN_BOUNCE], ids=["ordinary", "plain-text-bounce"])
def test_mail_that_is_not_a_report(raw):
    assert parse_report(raw) is None


def test_other_reports_and_forwarded_bounces_are_not_reports():
    receipt = POSTFIX_DSN.replace(b"report-type=delivery-status", b"report-type=disposition-notification")
    assert parse_report(receipt) is None
    # A bounce forwarded as an attachment is the forwarder's mail.
    forwarded = (
        b"From: alice@example.com\r\nSubject: Fwd: bounce\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=OUTER\r\n\r\n--OUTER\r\nContent-Type: text/plain\r\n\r\n"
        b"See below.\r\n--OUTER\r\nContent-Type: message/rfc822\r\n\r\n" + POSTFIX_DSN + b"\r\n--OUTER--\r\n"
    )
    assert parse_report(forwarded) is None
    # Delivery-status said, feedback-report given: neither.
    mismatched = ARF_RFC5965.replace(b"report-type=feedback-report", b"report-type=delivery-status")
    assert parse_report(mismatched) is None


def test_report_wrapped_in_another_multipart_is_read():
    wrapped = (
        b"From: gateway@example.net\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=OUTER\r\n\r\n--OUTER\r\nContent-Type: text/plain\r\n\r\n"
        b"Gateway notice.\r\n--OUTER\r\n"
        + POSTFIX_DSN.split(b"\r\n\r\n", 1)[0].split(b"MIME-Version: 1.0\r\n")[1]
        + b"\r\n\r\n"
        + POSTFIX_DSN.split(b"\r\n\r\n", 1)[1]
        + b"\r\n--OUTER--\r\n"
    )
    report = parse_report(wrapped)
    assert report is not None and report.original_message_id == ORIGINAL_ID
    assert [r.recipient for r in report.recipients] == ["nobody@example.com"]


def test_missing_status_or_action_is_inferred_and_unusable_blocks_skipped():
    report = parse_report(
        dsn(
            "Final-Recipient: rfc822; a@example.com\nAction: failed\n\n"  # no Status: failed is final
            "Final-Recipient: rfc822; b@example.com\nStatus: 4.2.2 (over quota)\n\n"  # no Action
            "Final-Recipient: rfc822; c@example.com\nAction: failed\nDiagnostic-Code: smtp; 550-5.7.1 blocked\n\n"
            "Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1\n\n"
            "Final-Recipient: x400; /C=US/O=Example/\nOriginal-Recipient: rfc822;<d@example.com>\n"
            "Action: FAILED (bad mailbox)\nStatus: 5.1.1\n\n"
            "Final-Recipient: rfc822; e@example.com\nAction: bogus\n\n"
        )
    )
    assert report is not None
    assert [(r.recipient, r.action, r.status) for r in report.recipients] == [
        ("a@example.com", "failed", "5.0.0"),
        ("b@example.com", "delayed", "4.2.2"),
        ("c@example.com", "failed", "5.7.1"),
        ("d@example.com", "failed", "5.1.1"),
    ]


def test_global_dsn_with_non_ascii_diagnostic():
    raw = dsn(
        "Final-Recipient: rfc822; jose@example.com\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 Bo\u00eete inconnue \u2014 Jos\u00e9\n",
        report_type="global-delivery-status",
        part="message/global-delivery-status",
    )
    report = parse_report(raw)
    assert report is not None
    [jose] = report.recipients
    assert jose.recipient == "jose@example.com" and jose.status == "5.1.1"
    assert jose.diagnostic == "550 5.1.1 Bo\u00eete inconnue \u2014 Jos\u00e9"
    assert report.reporting_mta == "mx.example.net"


def test_diagnostic_is_truncated():
    raw = dsn(
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; " + "x" * 5000
    )
    [recipient] = parse_report(raw).recipients
    assert recipient.diagnostic == "x" * 500


def test_a_thousand_recipient_blocks_are_capped():
    blocks = "".join(
        f"Final-Recipient: rfc822; u{i}@example.com\nAction: failed\nStatus: 5.1.1\n\n" for i in range(1000)
    )
    started = time.perf_counter()
    report = parse_report(dsn(blocks))
    assert time.perf_counter() - started < 2
    assert report is not None and len(report.recipients) == MAX_RECIPIENTS == 100
    assert report.recipients[0].recipient == "u0@example.com"
    assert report.recipients[-1].recipient == "u99@example.com"


def test_a_hundred_thousand_blocks_stop_early():
    blocks = "".join(f"Final-Recipient: rfc822; u{i}@example.com\nAction: failed\n\n" for i in range(100_000))
    started = time.perf_counter()
    assert parse_report(dsn(blocks)) is None  # refused at the part limit, not parsed whole
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 100,
        bytes(random.Random(5).randrange(256) for _ in range(20_000)),
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary at all\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
        b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n\xff\xfe==\x00\n\n\n--B--\n",
        b"Content-Type: multipart/report; report-type*=bogus''delivery-status; boundary=B\n\n--B--\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
        b"Content-Type: message/delivery-status\n\n:\n: :\n\xc3\x28: \xa0\xa1\n\n"
        b"--B\nContent-Type: message/rfc822\n\n--B--\n",
        POSTFIX_DSN[: len(POSTFIX_DSN) // 2],
        b"Content-Type: multipart/mixed; boundary=A\n\n" + b"--A\nContent-Type: multipart/mixed; boundary=A\n\n" * 3000,
        b"Content-Type: multipart/mixed; boundary=A0\n\n"
        + b"".join(b"--A%d\nContent-Type: multipart/mixed; boundary=A%d\n\n" % (i, i + 1) for i in range(1500)),
    ],
    ids=[
        "empty",
        "nul",
        "random",
        "no-boundary",
        "no-parts",
        "base64-status",
        "rfc2231",
        "garbage-fields",
        "cut",
        "wide-deep",
        "deep",
    ],
)
def test_broken_input_never_raises(raw):
    assert parse_report(raw) is None


def test_report_cut_after_its_status_part_is_read_in_part():
    cut = POSTFIX_DSN[: POSTFIX_DSN.index(b"Content-Description: Undelivered Message Headers")]
    report = parse_report(cut)
    assert report is not None and report.original_message_id is None
    assert [(r.recipient, r.status) for r in report.recipients] == [("nobody@example.com", "5.1.1")]


def test_mutated_reports_never_raise():
    rng = random.Random(2026)
    samples = [POSTFIX_DSN, GMAIL_DSN, DELAYED_DSN, ARF_RFC5965, ARF_NO_RCPT_TO]
    for _ in range(300):
        raw = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(raw))
            choice = rng.random()
            if choice < 0.4:
                raw[at] = rng.randrange(256)
            elif choice < 0.7:
                del raw[at : at + rng.randint(1, 40)]
            else:
                raw[at:at] = rng.choice([b"\n\n", b"\r\n", b";", b"<", b"=?utf-8?q?=0A?=", b"\xff", b"--"])
        result = parse_report(bytes(raw))
        assert result is None or isinstance(result, Report)
        if result is not None:
            assert len(result.recipients) <= MAX_RECIPIENTS
            assert all("\n" not in r.diagnostic and len(r.diagnostic) <= 500 for r in result.recipients)


def test_raw_must_be_bytes():
    with pytest.raises(TypeError, match="bytes"):
        parse_report(POSTFIX_DSN.decode())


def test_permanent_is_class_5_only():
    assert permanent("5.1.1") and permanent("5.0.0")
    assert not permanent("4.4.1") and not permanent("2.0.0") and not permanent("")


def test_verp_round_trip():
    address = verp_address(MSG_ID, "Agents.Example.org.")
    assert address == f"bounce-{MSG_ID}@agents.example.org"
    assert verp_message_id(address) == MSG_ID
    assert verp_message_id(f"<{address}>") == MSG_ID


@pytest.mark.parametrize(
    "address",
    [
        "bounce-../..@agents.example.org",
        "bounce-msg_short@agents.example.org",
        f"bounces-{MSG_ID}@agents.example.org",
        f"xbounce-{MSG_ID}@agents.example.org",
        f"BOUNCE-{MSG_ID.upper()}@agents.example.org",
        f"bounce-{MSG_ID}x@agents.example.org",
        f"bounce-{MSG_ID}+tag@agents.example.org",
        f"bounce-{MSG_ID.replace('msg_', 'inb_')}@agents.example.org",
        f"bounce-{MSG_ID}@",
        f"bounce-{MSG_ID}",
        f"bounce-{MSG_ID}@bad domain",
        f'"bounce-{MSG_ID}"@agents.example.org',
        f"bounce-{MSG_ID}\n@agents.example.org",
        "",
    ],
)
def test_verp_refuses_lookalikes(address):
    assert verp_message_id(address) is None


def test_verp_address_refuses_bad_input():
    with pytest.raises(ValueError, match="not a Postern message id"):
        verp_address("../etc", "agents.example.org")
    with pytest.raises(ValueError, match="not a domain name"):
        verp_address(MSG_ID, "bad domain@x")
