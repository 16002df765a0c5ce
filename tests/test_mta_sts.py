"""MTA-STS and TLS reporting (docs/dns.md): dns_builtin publishes ``_mta-sts``,
``mta-sts.<domain>`` and ``_smtp._tls`` for every mail domain when configured, answered
over real DNS, and the API serves the policy whose id the TXT record carries."""

from __future__ import annotations

import pytest
from support.dns import RunningDns, dns_config_text, free_udp_and_tcp_port, rdatas
from support.world import make_tenant

from postern.core import mtasts, zones
from postern.core.config import load_config
from postern.core.errors import ConfigError
from postern.core.runtime import build_postern

BASE = "agents.localhost"
ACME = f"acme.{BASE}"
ON = 'mta_sts_mode = "enforce"\nmta_sts_addresses = ["192.0.2.7"]\ntls_rpt_rua = "mailto:tlsrpt@example.org"\n'


@pytest.fixture
def extra():
    return ON


@pytest.fixture
def config(tmp_path, env, extra):
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(free_udp_and_tcp_port(), extra))
    return load_config(path, environ=env)


@pytest.fixture
def acme(postern):
    tenant = make_tenant("acme")
    tenant.agent_key(domains=[f"sales.{ACME}"])
    return tenant


def policy(client, host: str, **params):
    return client.simulate_get("/.well-known/mta-sts.txt", host=host, params=params or None)


def test_every_mail_domain_publishes_its_policy_id_host_and_report_address(postern, acme, client):
    ns = RunningDns(postern)
    try:
        for domain in (ACME, f"sales.{ACME}"):
            served = policy(client, f"mta-sts.{domain}")
            assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
            assert served.text == (f"version: STSv1\r\nmode: enforce\r\nmx: mail.{BASE}\r\nmax_age: 604800\r\n")
            [txt] = rdatas(ns.query(f"_mta-sts.{domain}", "TXT"), "TXT")
            assert txt == f'"v=STSv1; id={mtasts.policy_id(served.text)}"'
            assert rdatas(ns.query(f"mta-sts.{domain}", "A"), "A") == ["192.0.2.7"]
            report = rdatas(ns.query(f"_smtp._tls.{domain}", "TXT"), "TXT")
            assert report == ['"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"']
        # The wildcard still answers for every other name below the apex.
        assert rdatas(ns.query(f"x.{ACME}", "MX"), "MX") == [f"10 mail.{BASE}."]
    finally:
        ns.stop()


def test_only_postern_mail_domains_get_a_policy(postern, acme, client):
    assert policy(client, f"MTA-STS.{ACME}.").status_code == 200  # case and a trailing dot aside
    assert policy(client, "api.example.org", domain=f"mta-sts.{ACME}").status_code == 200  # a TLS proxy's ask
    for host in (
        f"mta-sts.nosuch.{BASE}",
        f"mta-sts.other.{ACME}",
        f"www.{ACME}",
        "mta-sts.example.org",
        "",
        "x" * 400,
    ):
        resp = policy(client, host)
        assert resp.status_code == 404, host
        assert "STSv1" not in resp.text


@pytest.mark.parametrize("extra", [""])
def test_off_by_default_nothing_is_published_or_served(postern, acme, client):
    zone = zones.build_zone(postern, ACME)
    names = {r.name for r in zone.records}
    assert not {f"_mta-sts.{ACME}", f"mta-sts.{ACME}", f"_smtp._tls.{ACME}"} & names
    assert policy(client, f"mta-sts.{ACME}").status_code == 404


def test_the_policy_id_changes_with_the_policy(tmp_path, env):
    ids = set()
    for mode in ("testing", "enforce"):
        path = tmp_path / f"{mode}.toml"
        path.write_text(dns_config_text(free_udp_and_tcp_port(), f'mta_sts_mode = "{mode}"\n'))
        settings = build_postern(load_config(path, environ=env), open_db=False).backend("dns").zone_settings(BASE)
        [record] = [r for r in mtasts.records(settings, ACME) if r.rtype == "TXT"]
        ids.add(record.value)
        # Without mta_sts_addresses the policy host is the mail host.
        assert [r.value for r in mtasts.records(settings, ACME) if r.rtype == "A"] == ["127.0.0.1"]
    assert len(ids) == 2


@pytest.mark.parametrize(
    "line, named",
    [
        ('mta_sts_mode = "strict"', "mta_sts_mode"),
        ("mta_sts_max_age = 60", "mta_sts_max_age"),
        ('tls_rpt_rua = "tlsrpt@example.org"', "tls_rpt_rua"),
        ('mta_sts_addresses = ["mta-sts.example.org"]', "mta_sts_addresses"),
    ],
)
def test_bad_options_stop_start_up_naming_them(tmp_path, env, line, named):
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(free_udp_and_tcp_port(), line + "\n"))
    with pytest.raises(ConfigError, match=named):
        build_postern(load_config(path, environ=env), open_db=False)
