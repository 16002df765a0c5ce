"""``postern doctor`` against real parts: a SQLite database, sockets held on real ports,
a real smarthost (the ``sink``), Postern's own DNS server as the resolver, certificates
made with cryptography; and ``/healthz`` reporting a backend it cannot reach."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

import falcon.testing
import pytest
from click.testing import CliRunner
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port
from support.server import free_port
from support.world import make_tenant
from support.zone_dns import ZoneDns

from postern.api import create_app
from postern.cli import cli
from postern.core.config import load_config
from postern.core.doctor import checks
from postern.core.doctor.report import Finding, exit_code, render
from postern.core.migrations import SchemaMigration
from postern.core.runtime import build_postern

BASE = "agents.localhost"
ACME = f"acme.{BASE}"


def write_config(tmp_path, text: str = "", *, receive: str = "", resolver: str = "", smarthost: str = ""):
    """A config on free ports (so nothing running on this host interferes), the DNS
    checks resolving through ``resolver``; ``receive`` replaces smtp_local's table."""
    resolvers = f'resolvers = ["{resolver}"]\n' if resolver else ""
    relay = f'[send.smtp_local]\nsmarthost = "{smarthost}"\nstarttls = false\n' if smarthost else ""
    receive = receive or f'[receive.smtp_local]\nbind = "127.0.0.1:{free_port()}"\n'
    path = tmp_path / "postern.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{free_port()}"\n{text}\n{receive}'
        + dns_config_text(free_udp_and_tcp_port(), resolvers)
        + relay
    )
    return path


def doctor(path, env) -> list[Finding]:
    return checks.run_checks(str(path), environ=env)


def by_check(findings: list[Finding]) -> dict[str, list[Finding]]:
    found: dict[str, list[Finding]] = {}
    for finding in findings:
        found.setdefault(finding.check, []).append(finding)
    return found


def one(findings: list[Finding], check: str) -> Finding:
    [finding] = by_check(findings)[check]
    return finding


def make_private(tmp_path):
    """What ``postern serve`` leaves: every file of the test's data private (the test
    process's umask made them readable by others)."""
    for directory, _dirnames, filenames in os.walk(tmp_path):
        os.chmod(directory, 0o700)
        for name in filenames:
            os.chmod(os.path.join(directory, name), 0o600)


@pytest.fixture
def dns_server(tmp_path, env, db):
    """Postern's DNS server on a port of its own: the resolver the checks ask."""
    port = free_udp_and_tcp_port()
    (tmp_path / "ns.toml").write_text(dns_config_text(port))
    ns = RunningDns(build_postern(load_config(tmp_path / "ns.toml", environ=env)))
    yield f"127.0.0.1:{port}"
    ns.stop()


def test_a_healthy_installation_is_all_ok_and_exits_0(tmp_path, env, db, sink, dns_server):
    make_tenant("acme")
    path = write_config(tmp_path, resolver=dns_server, smarthost=f"127.0.0.1:{sink[1]}")
    make_private(tmp_path)
    result = CliRunner().invoke(cli, ["doctor", "--json", "--config", str(path)], env=env)
    findings = json.loads(result.output)
    assert [f for f in findings if f["status"] != "OK"] == []
    assert result.exit_code == 0
    assert all(set(f) == {"check", "status", "detail", "fix"} for f in findings)
    checked = {f["check"] for f in findings}
    assert {"config", "database", "secrets.dkim", "secrets.server", "ports.api", "ports.smtp", "ports.dns"} <= checked
    assert {"send.smtp_local.smarthost", "dns.delegation", "dns.records", "tls"} <= checked
    records = next(f for f in findings if f["check"] == "dns.records")
    assert records["detail"].startswith(f"{ACME}: ") and "as Postern builds them" in records["detail"]
    assert sink[0].received == []  # EHLO and QUIT: no mail


def test_human_output_has_a_symbol_per_line_and_the_fix_under_it(tmp_path, env, db):
    path = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["doctor", "--config", str(path)], env=env)
    assert result.exit_code == 1, result.output  # capture-only and a development domain: warnings only
    lines = result.output.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("! WARN send.smtp_local.outbound:"))
    assert "captured" in lines[warning] and lines[warning + 1].strip().startswith("fix: set [send.smtp_local]")
    assert lines[-1].endswith("0 failure(s)") and all(line[0] in "✓!✗ " for line in lines[:-1])


def test_a_port_held_by_another_program_fails_and_exits_2(tmp_path, env, db):
    path = write_config(tmp_path)
    smtp_bind = load_config(path, environ=env).roles["receive"].options["smtp_local"]["bind"]
    host, port = smtp_bind.rsplit(":", 1)
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen(1)
        findings = doctor(path, env)
        result = CliRunner().invoke(cli, ["doctor", "--json", "--config", str(path)], env=env)
    held = one(findings, "ports.smtp")
    assert held.status == "FAIL" and "already in use by something other than Postern" in held.detail
    assert f"pid {os.getpid()}" in held.detail and "free one" in held.fix
    assert one(findings, "ports.api").status == "OK" and one(findings, "ports.dns").status == "OK"
    assert result.exit_code == 2
    assert {"check": "ports.smtp", "status": "FAIL"}.items() <= next(
        f for f in json.loads(result.output) if f["check"] == "ports.smtp"
    ).items()


def test_two_listeners_on_one_port_fail(tmp_path, env, db):
    path = write_config(tmp_path, "[mcp]\nenabled = true\n")
    api = load_config(path, environ=env).server.bind
    path.write_text(path.read_text().replace("[mcp]\nenabled = true\n", f'[mcp]\nenabled = true\nbind = "{api}"\n'))
    clash = one(doctor(path, env), "ports.mcp")
    assert clash.status == "FAIL" and "are both configured on" in clash.detail


def test_a_pending_migration_fails_with_db_upgrade(tmp_path, env, db):
    latest = SchemaMigration.select().order_by(SchemaMigration.version.desc()).first()
    latest.delete_instance()  # the database as the Postern before this one left it
    findings = doctor(write_config(tmp_path), env)
    schema = one(findings, "database.schema")
    assert schema.status == "FAIL" and schema.fix == "run 'postern db upgrade'"
    assert f"version {latest.version - 1}" in schema.detail and "1 migration(s) pending" in schema.detail
    assert exit_code(findings) == 2
    assert "dns.records" not in by_check(findings)  # nothing that needs the current schema ran


def test_a_missing_database_is_not_created(tmp_path, env, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("a SQLite file that does not exist; a PostgreSQL database is made by its operator")
    findings = doctor(write_config(tmp_path), env)
    assert one(findings, "database").status == "FAIL" and "postern db upgrade" in one(findings, "database").fix
    assert not (tmp_path / "postern.db").exists()


def test_a_smarthost_that_answers_is_ok_and_one_that_refuses_fails(tmp_path, env, db, sink):
    answers = one(doctor(write_config(tmp_path, smarthost=f"127.0.0.1:{sink[1]}"), env), "send.smtp_local.smarthost")
    assert answers.status == "OK" and "answers" in answers.detail
    closed = free_port()
    refused = one(doctor(write_config(tmp_path, smarthost=f"127.0.0.1:{closed}"), env), "send.smtp_local.smarthost")
    assert refused.status == "FAIL" and refused.detail == f"smarthost at 127.0.0.1:{closed}: connection refused"
    assert refused.reason == "connection refused" and "smarthost" in refused.fix


def test_the_published_records_are_compared_with_what_postern_builds(tmp_path, env, db):
    make_tenant("acme")
    # Another server sharing the database, configured with another mail host: what a
    # stale or misconfigured secondary would publish.
    port = free_udp_and_tcp_port()
    (tmp_path / "wrong.toml").write_text(dns_config_text(port, 'mail_host = "mx.elsewhere.example"\n'))
    ns = RunningDns(build_postern(load_config(tmp_path / "wrong.toml", environ=env)))
    try:
        findings = doctor(write_config(tmp_path, resolver=f"127.0.0.1:{port}"), env)
    finally:
        ns.stop()
    assert one(findings, "dns.delegation").status == "OK"
    records = one(findings, "dns.records")
    assert records.status == "FAIL" and records.detail.startswith(f"{ACME}: 1 of ")
    assert f"MX {ACME}: want '10 mail.{BASE}', found '10 mx.elsewhere.example'" in records.detail
    assert f"postern admin dns records {ACME}" in records.fix


def test_a_wrong_delegation_and_a_silent_resolver_fail(tmp_path, env, db):
    zone = ZoneDns({(BASE, "NS"): ["ns.other.example."]})
    try:
        delegation = one(doctor(write_config(tmp_path, resolver=zone.address), env), "dns.delegation")
    finally:
        zone.close()
    assert delegation.status == "FAIL" and "ns.other.example" in delegation.detail
    assert f"delegate {BASE} to ns1.{BASE}, ns2.{BASE}" in delegation.fix
    silent = ZoneDns(silent=True)
    try:
        down = one(doctor(write_config(tmp_path, resolver=silent.address), env), "dns.resolver")
    finally:
        silent.close()
    assert down.status == "FAIL" and silent.address in down.detail


def certificate(tmp_path, name: str, not_after: dt.datetime) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.agents.localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_an_expired_certificate_fails_and_one_near_expiry_warns(tmp_path, env, db):
    now = dt.datetime.now(dt.UTC)
    cert, key = certificate(tmp_path, "expired", now - dt.timedelta(days=1))
    os.chmod(key, 0o644)  # readable by others, whatever the umask the tests run under
    receive = f'[receive.smtp_local]\nbind = "127.0.0.1:{free_port()}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    findings = doctor(write_config(tmp_path, receive=receive), env)
    expired = one(findings, "tls")
    assert expired.status == "FAIL" and "expired on" in expired.detail and "renew" in expired.fix
    assert one(findings, "files.tls_key").status == "WARN"

    soon, _ = certificate(tmp_path, "soon", now + dt.timedelta(days=5))
    warned = checks.certificate_finding("SMTP listener", soon)
    assert warned.status == "WARN" and "expires in 5.0 days" in warned.detail
    later, _ = certificate(tmp_path, "later", now + dt.timedelta(days=60))
    assert checks.certificate_finding("SMTP listener", later).status == "OK"


def test_a_readable_data_directory_warns(tmp_path, env, db):
    path = write_config(tmp_path)
    make_private(tmp_path)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    os.chmod(data, 0o755)
    found = one(doctor(path, env), "files.data_dir")
    assert found.status == "WARN" and "0755" in found.detail and found.fix.startswith(f"chmod 700 {data}")


def test_an_unreachable_wildduck_fails_in_doctor(tmp_path, env, db):
    api, lmtp = free_port(), free_port()
    receive = (
        f'[receive]\nbackend = "wildduck"\n[receive.wildduck]\napi_url = "http://127.0.0.1:{api}"\n'
        f'lmtp_port = {lmtp}\nsmtp_bind = "127.0.0.1:{free_port()}"\n'
    )
    findings = doctor(write_config(tmp_path, receive=receive), env)
    assert one(findings, "receive.wildduck.api").status == "FAIL"
    assert one(findings, "receive.wildduck.lmtp").detail == f"WildDuck LMTP at 127.0.0.1:{lmtp}: connection refused"
    assert one(findings, "ports.smtp").detail.startswith("SMTP front door:")


def test_a_broken_config_is_one_failure(tmp_path, env):
    path = tmp_path / "postern.toml"
    path.write_text("[server]\nbind = 8800\n")
    [finding] = doctor(path, env)
    assert finding.check == "config" and finding.status == "FAIL" and "server.bind" in finding.detail


def test_exit_codes_follow_the_worst_finding():
    good, meh, bad = Finding("a", "OK", "fine"), Finding("b", "WARN", "hm", "do x"), Finding("c", "FAIL", "no", "do y")
    assert (exit_code([good]), exit_code([good, meh]), exit_code([meh, bad, good])) == (0, 1, 2)
    assert render([meh]).splitlines()[:2] == ["! WARN b: hm", "         fix: do x"]
    with pytest.raises(ValueError):
        Finding("d", "MAYBE", "?")


# -- /healthz ---------------------------------------------------------------------------


@pytest.fixture
def wildduck_down(tmp_path, env):
    api, lmtp = free_port(), free_port()
    path = tmp_path / "wildduck.toml"
    path.write_text(
        f'[receive]\nbackend = "wildduck"\n[receive.wildduck]\napi_url = "http://127.0.0.1:{api}"\n'
        f'lmtp_port = {lmtp}\nsmtp_bind = ""\n'
    )
    return load_config(path, environ=env), (api, lmtp)


def test_healthz_is_degraded_while_a_backend_cannot_be_reached(wildduck_down, db, monkeypatch):
    from postern.plugins.wildduck.receiver import WildDuckReceiver

    config, (api, lmtp) = wildduck_down
    calls = []
    probe = WildDuckReceiver.probe
    monkeypatch.setattr(WildDuckReceiver, "probe", lambda self, *a: calls.append(1) or probe(self, *a))
    client = falcon.testing.TestClient(create_app(build_postern(config)))
    resp = client.simulate_get("/healthz")
    assert resp.status_code == 200  # only a database that does not answer is a 503
    body = resp.json
    assert body["status"] == "degraded" and body["database"]["ok"] is True
    assert {"services", "outbound", "schema_version"} <= set(body) | set(body["database"])
    receive = next(b for b in body["backends"] if b["role"] == "receive")
    assert receive["backend"] == "wildduck" and receive["reachable"] is False
    assert receive["reason"] == "receive.wildduck.api: connection refused; receive.wildduck.lmtp: connection refused"
    assert str(api) not in resp.text and str(lmtp) not in resp.text  # /healthz answers anyone
    assert all(b["reachable"] for b in body["backends"] if b["role"] != "receive")
    for _ in range(3):
        assert client.simulate_get("/healthz").json["status"] == "degraded"
    assert len(calls) == 1  # probed once, then answered from the cache


def test_healthz_is_ok_when_the_backends_answer(client):
    body = client.simulate_get("/healthz").json
    assert body["status"] == "ok"
    # The send side is doctor's to check: /healthz answers anyone and connects to no third party.
    assert {(b["role"], b["backend"], b["reachable"]) for b in body["backends"]} == {
        ("receive", "smtp_local", True),
        ("dns", "dns_builtin", True),
        ("billing", "free", True),
    }
