"""``/v1/domains``: what a tenant must publish and delegate, checked through a real
resolver path (dnspython asking Postern's own DNS server), and the admin CLI."""

from __future__ import annotations

import json
import socket

import falcon.testing
import pytest
from click.testing import CliRunner
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port
from support.world import make_tenant

from postern.api import create_app
from postern.cli import cli
from postern.core.config import load_config
from postern.core.errors import ConfigError
from postern.core.models import AuditEvent, DkimKey, DomainCheck
from postern.core.runtime import build_postern

BASE = "agents.localhost"
ACME = f"acme.{BASE}"
SALES = f"sales.{ACME}"


def dns_config(tmp_path, env, port: int, extra: str = ""):
    """Postern's DNS server on ``port``, and its checks resolving through it."""
    path = tmp_path / f"postern-{port}.toml"
    path.write_text(dns_config_text(port, f'resolvers = ["127.0.0.1:{port}"]\n{extra}'))
    return load_config(path, environ=env)


@pytest.fixture
def port():
    return free_udp_and_tcp_port()


@pytest.fixture
def config(tmp_path, env, port):
    return dns_config(tmp_path, env, port)


@pytest.fixture
def acme(postern):
    return make_tenant("acme")


@pytest.fixture
def agent(acme):
    return acme.agent_key(domains=[SALES])


def bearer(enrolled) -> dict:
    return {"Authorization": f"Bearer {enrolled.agent_key}"}


def by_name_type(records) -> dict:
    found = {}
    for r in records:
        found.setdefault((r["name"], r["type"]), []).append(r["value"])
    return found


def test_an_agent_sees_its_domains_records_and_delegation(client, agent):
    resp = client.simulate_get("/v1/domains", headers=bearer(agent))
    assert resp.status_code == 200, resp.text
    [domain] = resp.json["data"]
    assert (domain["domain"], domain["zone"], domain["status"]) == (SALES, ACME, "unverified")
    records = by_name_type(domain["records"])
    assert records[(SALES, "MX")] == [f"10 mail.{BASE}"]
    assert records[(SALES, "TXT")] == ["v=spf1 mx -all"]
    assert records[(f"_dmarc.{SALES}", "TXT")] == ["v=DMARC1; p=quarantine; adkim=r; aspf=r"]
    assert sorted(records[(ACME, "NS")]) == [f"ns1.{BASE}", f"ns2.{BASE}"]
    [dkim] = records[(f"postern._domainkey.{ACME}", "TXT")]
    assert dkim == f"v=DKIM1; k=rsa; p={DkimKey.get_by_id(ACME).public_key}"
    registrar, ours = domain["delegations"]
    assert (registrar["zone"], registrar["parent"], registrar["served_by_postern"]) == (BASE, "localhost", False)
    assert by_name_type(registrar["records"])[(BASE, "NS")] == [f"ns1.{BASE}", f"ns2.{BASE}"]
    assert by_name_type(registrar["records"])[(f"ns1.{BASE}", "A")] == ["127.0.0.1"]  # glue
    assert (ours["zone"], ours["parent"], ours["served_by_postern"]) == (ACME, BASE, True)

    assert client.simulate_get(f"/v1/domains/{SALES.upper()}", headers=bearer(agent)).json == domain
    row = AuditEvent.select().where(AuditEvent.action == "domain.read").get()
    assert (row.outcome, row.target) == ("ok", SALES)


def test_private_keys_never_reach_a_response(client, agent):
    text = client.simulate_get("/v1/domains", headers=bearer(agent)).text
    sealed = DkimKey.get_by_id(ACME).private_key_sealed
    assert "PRIVATE" not in text and sealed not in text and sealed.split(".", 1)[1][:40] not in text


def test_only_the_keys_own_domains_are_visible(client, acme, agent):
    other = acme.agent_key(handle="other")  # same tenant, its own grant: the apex only
    assert [d["domain"] for d in client.simulate_get("/v1/domains", headers=bearer(other)).json["data"]] == [ACME]
    for name in (ACME, f"nosuch.{BASE}", "example.com", "not a domain", "x" * 300):
        resp = client.simulate_get(f"/v1/domains/{name}", headers=bearer(agent))
        assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found", name
        resp = client.simulate_post(f"/v1/domains/{name}/verify", headers=bearer(agent))
        assert resp.status_code == 404, name
    assert DomainCheck.select().count() == 0
    globex = make_tenant("globex").agent_key()
    resp = client.simulate_get(f"/v1/domains/{SALES}", headers=bearer(globex))
    assert resp.status_code == 404 and resp.json["error"]["message"] == f"no domain '{SALES}'"


def test_verify_resolves_through_postern_dns_and_stores_the_status(postern, client, agent):
    from support.world import INFO

    from postern.core.auth import authenticate
    from postern.core.models import WebhookDelivery
    from postern.core.webhooks.manage import create_webhook

    principal = authenticate(agent.agent_key, "agent", INFO)
    hook = {"url": "https://hooks.example.org/in", "event_types": ["domain.verified", "inbox.created"]}
    webhook = create_webhook(postern, principal, INFO, hook)[0]
    ns = RunningDns(postern)  # the resolver in config is this server
    try:
        resp = client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent))
        again = client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent))
    finally:
        ns.stop()
    assert again.json["status"] == "verified"
    [delivery] = WebhookDelivery.select().where(WebhookDelivery.webhook == webhook.id)  # once: on becoming verified
    event = json.loads(delivery.payload)
    assert event["type"] == "domain.verified" and event["data"]["domain"] == SALES
    assert event["data"]["status"] == "verified" and event["data"]["zone"] == ACME
    assert resp.status_code == 200, resp.text
    assert resp.json["status"] == "verified" and resp.json["checked_at"]
    checked = {(c["name"], c["type"]) for c in resp.json["checks"] if c["ok"]}
    assert checked == {
        (ACME, "NS"),
        (ACME, "MX"),
        (ACME, "TXT"),
        (SALES, "MX"),
        (SALES, "TXT"),
        (f"_dmarc.{SALES}", "TXT"),
        (f"postern._domainkey.{ACME}", "TXT"),
    }
    assert len(resp.json["checks"]) == 8  # seven questions; the two NS records come in one answer
    assert DomainCheck.get_by_id(SALES).status == "verified"
    assert client.simulate_get(f"/v1/domains/{SALES}", headers=bearer(agent)).json["status"] == "verified"
    row = AuditEvent.select().where(AuditEvent.action == "domain.verify").get()
    assert (row.outcome, row.code, row.target) == ("ok", "verified", SALES)


def test_verify_names_what_the_published_dns_gets_wrong(tmp_path, env, postern, client, agent, port):
    # Another server, sharing the database but configured with another mail host: what a
    # stale or misconfigured secondary would publish.
    wrong = build_postern(dns_config(tmp_path, env, port, 'mail_host = "mx.elsewhere.example"\n'))
    ns = RunningDns(wrong)
    try:
        resp = client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent))
    finally:
        ns.stop()
    assert resp.json["status"] == "failed"
    failed = {(c["name"], c["type"]): c for c in resp.json["checks"] if not c["ok"]}
    assert set(failed) == {(ACME, "MX"), (SALES, "MX")}
    assert failed[(SALES, "MX")]["found"] == ["10 mx.elsewhere.example"]
    assert failed[(SALES, "MX")]["expected"] == f"10 mail.{BASE}"


def test_admin_dns_commands(env, monkeypatch, tmp_path, acme, agent, port):
    config = tmp_path / "cli.toml"
    config.write_text(dns_config_text(port))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POSTERN_CONFIG", str(config))

    def run(*args):
        return CliRunner().invoke(cli, ["admin", "dns", *args], obj={}, catch_exceptions=False)

    result = run("records", ACME)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"$ORIGIN {ACME}.\n")
    assert f"{SALES}.\t300\tIN\tMX\t10 mail.{BASE}." in result.stdout
    assert "PRIVATE" not in result.output
    data = json.loads(run("records", SALES, "--json").stdout)  # any name inside the zone finds it
    assert data["zone"] == ACME and {"name": ACME, "type": "NS", "ttl": 300, "value": f"ns1.{BASE}"} in data["records"]
    assert f"ns1.{BASE}.\t300\tIN\tA\t127.0.0.1" in run("records", BASE).stdout
    missing = run("records", "example.com")
    assert missing.exit_code == 1 and "serves no zone holding 'example.com'" in missing.output
    listing = run("domains").stdout.splitlines()
    assert f"{SALES}\t{ACME}\tunverified" in listing and f"{ACME}\t{ACME}\tunverified" in listing


def test_disabling_the_dns_backend_the_config_uses_stops_start_up(env, db):
    config = load_config(environ={**env, "POSTERN_PLUGINS_DISABLED": "dns_builtin"})
    with pytest.raises(ConfigError, match="choose another \\[dns\\] backend"):
        build_postern(config)


def test_without_a_dns_backend_the_domains_api_says_so(env, db, agent):
    # dns_builtin not installed (not merely disabled, which start-up refuses): the
    # plugin manager is built without it, as it would be without the package.
    from postern.core.plugins import get_plugin_manager
    from postern.core.registry import BackendRegistry
    from postern.core.runtime import Postern

    config = load_config(environ=env)
    pm = get_plugin_manager()
    pm.unregister(pm.get_plugin("dns_builtin"))
    postern = Postern(config, pm, BackendRegistry.from_plugin_manager(pm))
    client = falcon.testing.TestClient(create_app(postern))
    resp = client.simulate_get("/v1/domains", headers=bearer(agent))
    assert resp.status_code == 503 and resp.json["error"]["code"] == "no_dns_backend"
    assert "dns_builtin" in resp.json["error"]["message"]


def verify_through_silence(client, agent, port: int, silence: str):
    """Verify while the resolver's port is closed, or bound by a socket that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dropper:
        if silence == "drops":
            dropper.bind(("127.0.0.1", port))  # packets arrive and are never read
        return client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent))


@pytest.mark.parametrize("silence", ["closed", "drops"])
def test_an_unreachable_resolver_is_a_503_that_leaves_the_status_as_it_was(postern, client, agent, port, silence):
    down = verify_through_silence(client, agent, port, silence)
    assert down.status_code == 503 and int(down.headers["Retry-After"]) >= 1, down.text
    assert down.json["error"]["code"] == "resolver_unreachable"
    assert DomainCheck.get_or_none(DomainCheck.domain == SALES) is None  # still unverified, not failed
    assert client.simulate_get(f"/v1/domains/{SALES}", headers=bearer(agent)).json["status"] == "unverified"

    ns = RunningDns(postern)
    try:
        assert client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent)).json["status"] == "verified"
    finally:
        ns.stop()
    verified_at = DomainCheck.get_by_id(SALES).checked_at

    down = verify_through_silence(client, agent, port, silence)
    assert down.status_code == 503 and down.json["error"]["code"] == "resolver_unreachable"
    check = DomainCheck.get_by_id(SALES)
    assert (check.status, check.checked_at) == ("verified", verified_at)  # a resolver outage is not the domain's fault
    outcomes = [(r.outcome, r.code) for r in AuditEvent.select().where(AuditEvent.action.contains("verify"))]
    assert outcomes.count(("denied", "resolver_unreachable")) == 2 and outcomes.count(("ok", "verified")) == 1

    ns = RunningDns(postern)  # the resolver is back
    try:
        again = client.simulate_post(f"/v1/domains/{SALES}/verify", headers=bearer(agent))
    finally:
        ns.stop()
    assert again.status_code == 200 and again.json["status"] == "verified"
    assert DomainCheck.get_by_id(SALES).checked_at > verified_at
