"""STARTTLS on the SMTP listener (docs/trust.md, "TLS on the SMTP listener"): a real
``postern serve`` with a ``trustme`` certificate, driven over sockets with smtplib."""

from __future__ import annotations

import os
import smtplib
import ssl
import warnings
from pathlib import Path

import httpx
import pytest
import trustme
from support.server import seeding, wait_for
from support.world import make_tenant

from postern.client.models import Message as SdkMessage
from postern.core.config import ConfigError
from postern.core.db import database
from postern.core.models import Message
from postern.core.options import OptionError
from postern.core.runtime import build_postern
from postern.core.smtp.tls import ReloadingContext
from postern.plugins.smtp_local.receiver import SmtpLocalReceiver
from postern.plugins.wildduck.receiver import WildDuckReceiver

pytestmark = pytest.mark.slow


def write_pair(ca: trustme.CA, directory: Path, name: str = "smtp") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca`` and its key, as two PEM files,
    each written whole and moved into place (as certbot's renewals are)."""
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    for path, data in (
        (key, issued.private_key_pem.bytes()),
        (cert, b"".join(blob.bytes() for blob in issued.cert_chain_pems)),
    ):
        partial = path.with_suffix(".new")
        partial.write_bytes(data)
        os.replace(partial, path)
    return cert, key


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def ca():
    return trustme.CA()


@pytest.fixture
def live(serve, db_url, tmp_path, ca):
    """``live(require_tls=False)``: a server whose listener offers STARTTLS with a
    certificate from ``ca``, and an inbox on it (``server.address``, ``server.key``)."""

    def start(require_tls: bool = False):
        with seeding(db_url):
            enrolled = make_tenant("acme").agent_key(handle="support", max_mailboxes=5)
        cert, key = write_pair(ca, tmp_path)
        server = serve(
            smtp_options=f'tls_cert = "{cert}"\ntls_key = "{key}"\nrequire_tls = {str(require_tls).lower()}\n'
        )
        resp = httpx.post(
            f"{server.url}/v1/inboxes",
            json={"username": "box"},
            headers={"Authorization": f"Bearer {enrolled.agent_key}"},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        server.inbox, server.address, server.key = resp.json()["id"], resp.json()["address"], enrolled.agent_key
        server.cert, server.key_file = cert, key
        return server

    return start


def smtp(server) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30)


def stored(subject: str) -> Message:
    with database.connection_context():
        return Message.get(Message.subject == subject)


def message_json(server, message_id: str) -> dict:
    resp = httpx.get(
        f"{server.url}/v1/inboxes/{server.inbox}/messages/{message_id}",
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_starttls_is_offered_and_the_message_records_its_tls(live, ca):
    server = live()
    with smtp(server) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=trusting(ca))[0] == 220
        version = client.sock.version()
        cipher = client.sock.cipher()[0]
        client.ehlo()
        assert not client.has_extn("starttls")  # not offered again inside TLS
        client.sendmail("a@example.org", [server.address], b"Subject: secret\r\n\r\nbody\r\n")
    assert version in ("TLSv1.2", "TLSv1.3")
    message = stored("secret")
    assert message.tls == f"{version} {cipher}"
    body = message_json(server, message.id)
    assert body["tls"] == message.tls
    assert SdkMessage.from_json(body).tls == message.tls


def test_plaintext_still_works_when_tls_is_not_required_and_records_null(live):
    server = live()
    with smtp(server) as client:
        client.sendmail("a@example.org", [server.address], b"Subject: plain\r\n\r\nbody\r\n")
    message = stored("plain")
    assert message.tls is None
    assert message_json(server, message.id)["tls"] is None


def test_require_tls_refuses_mail_before_starttls(live, ca):
    server = live(require_tls=True)
    with smtp(server) as client:
        client.ehlo()
        assert client.docmd("MAIL", "FROM:<a@example.org>") == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert client.docmd("RCPT", f"TO:<{server.address}>")[0] == 503  # no MAIL was accepted
        client.starttls(context=trusting(ca))
        client.ehlo()
        client.sendmail("a@example.org", [server.address], b"Subject: after tls\r\n\r\nbody\r\n")
    assert stored("after tls").tls is not None
    with database.connection_context():
        assert Message.select().count() == 1


def up_to(ca: trustme.CA, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers TLS 1.0 up to ``maximum``."""
    context = trusting(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old versions are the point here
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
    return context


def test_tls_1_1_is_refused_and_the_listener_goes_on(live, ca):
    server = live()
    with smtp(server) as client, pytest.raises(ssl.SSLError):
        client.starttls(context=up_to(ca, ssl.TLSVersion.TLSv1_1))
    wait_for(lambda: "STARTTLS handshake with" in server.output())
    assert "UNSUPPORTED_PROTOCOL" in server.output()
    assert "Traceback" not in server.output()  # one line, not an ERROR per scanner
    # The same client allowed TLS 1.2 gets through: the version is what was refused.
    with smtp(server) as client:
        client.starttls(context=up_to(ca, ssl.TLSVersion.TLSv1_2))
        assert client.sock.version() == "TLSv1.2"
        client.ehlo()
        client.sendmail("a@example.org", [server.address], b"Subject: tls12\r\n\r\nbody\r\n")
    assert stored("tls12").tls.startswith("TLSv1.2 ")


def test_starttls_twice_is_refused_and_the_session_goes_on(live, ca):
    server = live()
    with smtp(server) as client:
        client.starttls(context=trusting(ca))
        client.ehlo()
        assert client.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        assert client.noop()[0] == 250
        client.sendmail("a@example.org", [server.address], b"Subject: twice\r\n\r\nbody\r\n")
    assert stored("twice").tls is not None


def test_a_replaced_certificate_is_served_to_the_next_connection(live, ca, tmp_path):
    server = live()
    renewed = trustme.CA()
    with smtp(server) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=trusting(renewed))
    write_pair(renewed, tmp_path)  # the same paths, new files: no restart
    with smtp(server) as client:
        client.starttls(context=trusting(renewed))
        client.ehlo()
        client.sendmail("a@example.org", [server.address], b"Subject: renewed\r\n\r\nbody\r\n")
    assert stored("renewed").tls is not None


def test_a_change_that_does_not_load_keeps_the_previous_certificate(tmp_path, ca, caplog):
    cert, key = write_pair(ca, tmp_path)
    contexts = ReloadingContext(str(cert), str(key))
    first = contexts.current()
    # Set here, not only by this OpenSSL's policy (which refuses TLS 1.1 on its own).
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
    assert contexts.current() is first  # unchanged files: the same context, nothing reloaded
    cert.write_bytes(b"half a certificate")
    assert contexts.current() is first
    assert contexts.current() is first
    assert caplog.text.count("kept the previous STARTTLS certificate") == 1  # logged once, not per connection
    key.unlink()
    assert contexts.current() is first
    write_pair(trustme.CA(), tmp_path)
    assert contexts.current() is not first


SECTION = "receive.smtp_local"


@pytest.fixture
def pair(tmp_path, ca):
    return write_pair(ca, tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda c, k: {"tls_cert": c}, "tls_cert is set but tls_key is not: STARTTLS needs both files"),
        (lambda c, k: {"tls_key": k}, "tls_key is set but tls_cert is not: STARTTLS needs both files"),
        (lambda c, k: {"require_tls": True}, "require_tls needs tls_cert and tls_key"),
        (lambda c, k: {"tls_cert": c, "tls_key": c}, "tls_cert and tls_key do not load as a certificate and its key"),
        (lambda c, k: {"tls_cert": k, "tls_key": k}, "tls_cert and tls_key do not load as a certificate and its key"),
        (
            lambda c, k: {"tls_cert": "/nonexistent/smtp.crt", "tls_key": k},
            "tls_cert must be a readable file, got '/nonexistent/smtp.crt': No such file or directory",
        ),
        (lambda c, k: {"tls_cert": c, "tls_key": 7}, "'tls_key' must be a string, got an integer (7)"),
        (lambda c, k: {"tls_cert": c, "tls_key": k, "require_tls": "yes"}, "'require_tls' must be true or false"),
    ],
)
def test_bad_tls_options_are_refused_clearly(pair, options, message):
    raw = options(str(pair[0]), str(pair[1]))
    with pytest.raises(OptionError) as refused:
        SmtpLocalReceiver.from_config(raw)
    assert str(refused.value).startswith(f"[{SECTION}]: {message}")
    with pytest.raises(OptionError) as refused:
        WildDuckReceiver.from_config({"api_url": "http://127.0.0.1:1", **raw})
    assert str(refused.value).startswith(f"[receive.wildduck]: {message}")


def test_a_key_path_that_cannot_be_read_is_refused(pair, tmp_path):
    cert, _ = pair
    with pytest.raises(OptionError, match=r"tls_key must be a readable file, got '.*': Is a directory$"):
        SmtpLocalReceiver.from_config({"tls_cert": str(cert), "tls_key": str(tmp_path)})


def test_good_options_reach_both_front_doors(pair):
    cert, key = str(pair[0]), str(pair[1])
    receiver = SmtpLocalReceiver.from_config({"tls_cert": cert, "tls_key": key, "require_tls": True})
    assert (receiver.options.tls_cert, receiver.options.tls_key, receiver.options.require_tls) == (cert, key, True)
    wildduck = WildDuckReceiver.from_config({"api_url": "http://127.0.0.1:1", "tls_cert": cert, "tls_key": key})
    listener = wildduck.options.listener()
    assert (listener.tls_cert, listener.tls_key, listener.require_tls) == (cert, key, False)


def test_a_missing_key_stops_start_up_with_one_clear_line(config, pair):
    config.roles["receive"].options = {"smtp_local": {"tls_cert": str(pair[0])}}
    with pytest.raises(ConfigError) as refused:
        build_postern(config, open_db=False)
    assert str(refused.value) == f"[{SECTION}]: tls_cert is set but tls_key is not: STARTTLS needs both files"
