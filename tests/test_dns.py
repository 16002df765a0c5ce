"""dns_builtin: records built from the database, served over real UDP and TCP sockets,
asked with dnspython and dig."""

from __future__ import annotations

import base64

import dns.edns
import dns.flags
import dns.rcode
import pytest
from support.backends import activate
from support.dns import RunningDns, dig, dns_config_text, free_udp_and_tcp_port, rdatas
from support.server import wait_for
from support.world import make_tenant

from postern.core import zones
from postern.core.backends import DnsRecord, Sender, SendResult
from postern.core.config import load_config
from postern.core.hookspecs import hookimpl
from postern.core.models import DkimKey

BASE = "agents.localhost"
ACME = f"acme.{BASE}"
EXTRA = 'mail_host_addresses = ["127.0.0.1", "::1"]\nrefresh_seconds = 3600\n'


@pytest.fixture
def dns_port():
    return free_udp_and_tcp_port()


@pytest.fixture
def config(tmp_path, env, dns_port):
    path = tmp_path / "postern.toml"
    path.write_text(dns_config_text(dns_port, EXTRA))
    return load_config(path, environ=env)


@pytest.fixture
def acme(postern):
    tenant = make_tenant("acme")
    tenant.agent_key(domains=[f"sales.{ACME}"])
    zones.build_zone(postern, ACME, ensure_dkim=True)  # as the domains API does: the key exists
    return tenant


@pytest.fixture
def ns(postern):
    server = RunningDns(postern)
    yield server
    server.stop()


def plugged(postern, plugin):
    postern.pm.register(plugin)
    return plugin


def dkim_key_of(response) -> str:
    """The p= of a DKIM TXT answer, its character-strings joined as a verifier does."""
    [rrset] = response.answer
    [rdata] = list(rrset)
    joined = b"".join(rdata.strings).decode()
    return dict(part.strip().split("=", 1) for part in joined.split(";"))["p"]


# -- records ------------------------------------------------------------------------


def test_a_tenant_zone_holds_every_record_it_needs(postern, acme):
    zone = zones.build_zone(postern, ACME)
    have = {(r.name, r.rtype) for r in zone.records}
    assert have >= {
        (ACME, "SOA"),
        (ACME, "NS"),
        (ACME, "MX"),
        (ACME, "TXT"),
        (f"*.{ACME}", "MX"),
        (f"_dmarc.{ACME}", "TXT"),
        (f"postern._domainkey.{ACME}", "TXT"),
        (f"sales.{ACME}", "MX"),
        (f"sales.{ACME}", "TXT"),
        (f"_dmarc.sales.{ACME}", "TXT"),
    }
    assert sorted(r.value for r in zone.at(ACME) if r.rtype == "NS") == [f"ns1.{BASE}", f"ns2.{BASE}"]
    assert [r.value for r in zone.at(ACME) if r.rtype == "MX"] == [f"10 mail.{BASE}"]
    assert [r.value for r in zone.at(ACME) if r.rtype == "TXT"] == ["v=spf1 mx -all"]  # smtp_local's relay
    assert zone.mail_domains == (ACME, f"sales.{ACME}")
    assert zones.build_zone(postern, f"nosuch.{BASE}") is None
    base = zones.build_zone(postern, BASE)
    assert {(r.name, r.rtype, r.value) for r in base.records} >= {
        (f"mail.{BASE}", "A", "127.0.0.1"),
        (f"mail.{BASE}", "AAAA", "::1"),
        (f"ns1.{BASE}", "A", "127.0.0.1"),
    }


def test_the_dkim_private_key_is_sealed_in_the_database(postern, acme, config):
    row = DkimKey.get_by_id(ACME)
    assert "PRIVATE KEY" not in row.private_key_sealed and row.private_key_sealed.startswith("v1.")
    from postern.core import dkim

    pem = dkim.unseal(dkim.kek(postern.config), row.private_key_sealed, ACME, row.selector)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(dkim.DkimKeyUnavailable, match="sealed with another key"):
        dkim.unseal(b"\0" * 32, row.private_key_sealed, ACME, row.selector)
    with pytest.raises(dkim.DkimKeyUnavailable):  # a row moved onto another domain does not open
        dkim.unseal(dkim.kek(postern.config), row.private_key_sealed, f"globex.{BASE}", row.selector)
    assert (postern.config.data_dir / "secrets" / "dkim.key").stat().st_mode & 0o077 == 0


class VendorSender(Sender):
    """A send backend that signs with a vendor's keys and needs its SPF and ownership TXT."""

    name = "vendor"

    def send(self, message):
        return SendResult(self.name, "v-1", "sent")

    def spf_mechanisms(self, postern, domain):
        return ["include:spf.vendor.example", "mx", "mx"]

    def dkim_records(self, postern, domain):
        return [DnsRecord(f"sel1._domainkey.{domain}", "CNAME", "sel1.vendor.example")]

    def dns_records(self, postern, domain):
        return [DnsRecord(f"_vendor.{domain}", "TXT", "owner=acme"), DnsRecord("evil.example", "A", "1.2.3.4")]


def test_the_active_send_backend_gives_spf_dkim_and_its_records(postern, acme):
    vendor = activate(postern, VendorSender)
    zone = zones.build_zone(vendor, ACME)
    [spf] = [r.value.split() for r in zone.at(ACME) if r.rtype == "TXT"]
    assert spf == ["v=spf1", "include:spf.vendor.example", "mx", "-all"]  # the duplicate "mx" dropped
    dkim_names = sorted((r.name, r.rtype) for r in zone.records if "_domainkey" in r.name)
    assert dkim_names == [(f"sel1._domainkey.{ACME}", "CNAME")]  # instead of Postern's own key
    assert [r.value for r in zone.at(f"_vendor.{ACME}")] == ["owner=acme"] and not zone.at("evil.example")


def test_an_installed_but_inactive_send_backend_is_never_asked(postern, acme):
    plugged(postern, VendorPlugin())  # registered, but [send] still chooses smtp_local
    zone = zones.build_zone(postern, ACME)
    [spf] = [r.value for r in zone.at(ACME) if r.rtype == "TXT"]
    assert spf == "v=spf1 mx -all"
    assert [r.rtype for r in zone.records if "_domainkey" in r.name] == ["TXT"]  # Postern's own key
    assert not zone.at(f"_vendor.{ACME}")


class VendorPlugin:
    @hookimpl
    def postern_register_backends(self, register):
        register("send", VendorSender.name, VendorSender)


def test_plugin_records_are_served_and_kept_inside_their_zone(postern, acme, ns):
    class Extra:
        @hookimpl
        def postern_dns_records(self, domain):
            return [DnsRecord(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=1"), DnsRecord("evil.example", "A", "1.2.3.4")]

    plugged(postern, Extra())
    zone = zones.build_zone(postern, ACME)
    assert zone.at(f"_mta-sts.{ACME}") and not zone.at("evil.example")
    assert rdatas(ns.query(f"_mta-sts.{ACME}", "TXT"), "TXT") == ['"v=STSv1; id=1"']


# -- serving --------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_every_record_type_with_dnspython(acme, ns, tcp):
    def ask(name, rtype):
        response = ns.query(name, rtype, tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA  # never a resolver
        return rdatas(response, rtype)

    soa = ask(ACME, "SOA")[0].split()
    assert soa[:2] == [f"ns1.{BASE}.", f"hostmaster.{BASE}."] and int(soa[2]) > 1_700_000_000
    assert ask(ACME, "NS") == [f"ns1.{BASE}.", f"ns2.{BASE}."]
    assert ask(f"mail.{BASE}", "A") == ["127.0.0.1"]
    assert ask(f"mail.{BASE}", "AAAA") == ["::1"]
    assert ask(ACME, "MX") == [f"10 mail.{BASE}."]
    assert ask(f"deep.nested.{ACME}", "MX") == [f"10 mail.{BASE}."]  # the wildcard
    assert ask(f"sales.{ACME}", "MX") == [f"10 mail.{BASE}."]
    assert ask(ACME, "TXT") == ['"v=spf1 mx -all"']
    assert ask(f"_dmarc.{ACME}", "TXT") == ['"v=DMARC1; p=quarantine; adkim=r; aspf=r"']
    response = ns.query(f"postern._domainkey.{ACME}", "TXT", tcp=tcp)
    [rdata] = list(response.answer[0])
    assert len(rdata.strings) == 2 and all(len(s) <= 255 for s in rdata.strings)  # a 2048-bit key splits
    assert dkim_key_of(response) == DkimKey.get_by_id(ACME).public_key
    base64.b64decode(dkim_key_of(response), validate=True)


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_every_record_type_with_dig(acme, ns, transport):
    def short(name, rtype):
        return sorted(dig(ns.port, transport, "+short", name, rtype).split("\n"))[1:]

    assert short(ACME, "NS") == [f"ns1.{BASE}.", f"ns2.{BASE}."]
    assert short(f"mail.{BASE}", "A") == ["127.0.0.1"]
    assert short(f"mail.{BASE}", "AAAA") == ["::1"]
    assert short(f"x.{ACME}", "MX") == [f"10 mail.{BASE}."]
    assert short(ACME, "TXT") == ['"v=spf1 mx -all"']
    assert short(f"_dmarc.sales.{ACME}", "TXT") == ['"v=DMARC1; p=quarantine; adkim=r; aspf=r"']
    assert short(ACME, "SOA")[0].startswith(f"ns1.{BASE}. hostmaster.{BASE}. ")
    [dkim_txt] = short(f"postern._domainkey.{ACME}", "TXT")
    strings = dkim_txt.split('" "')
    assert len(strings) == 2 and "".join(strings).strip('"').endswith(DkimKey.get_by_id(ACME).public_key)
    full = dig(ns.port, transport, ACME, "MX")
    assert "status: NOERROR" in full and "flags: qr aa;" in full


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_nodata_and_refused(acme, ns, tcp):
    missing = ns.query(f"nope._domainkey.{ACME}", "TXT", tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA and not missing.answer
    [soa] = missing.authority
    assert soa.name.to_text() == f"{ACME}." and soa.rdtype == dns.rdatatype.SOA

    no_tenant = ns.query(f"nosuch.{BASE}", "MX", tcp=tcp)  # no such tenant: the base zone says so
    assert no_tenant.rcode() == dns.rcode.NXDOMAIN and no_tenant.authority[0].name.to_text() == f"{BASE}."

    for name, rtype in ((ACME, "A"), (f"_domainkey.{ACME}", "TXT"), (f"x.{ACME}", "A")):
        nodata = ns.query(name, rtype, tcp=tcp)  # the name exists (or is empty non-terminal / wildcard)
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, name
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA and nodata.flags & dns.flags.AA

    for name in ("example.com", "localhost", "agents.localhost.evil.example", "."):
        refused = ns.query(name, "A", tcp=tcp)
        assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA, name
        assert not refused.answer and not refused.authority
    assert ns.query(ACME, "AXFR", tcp=True).rcode() == dns.rcode.REFUSED
    chaos = ns.query("version.bind", "TXT", rdclass="CH", tcp=tcp)
    assert chaos.rcode() == dns.rcode.REFUSED


def test_names_are_case_insensitive_and_the_question_is_echoed(acme, ns):
    for _ in range(3):  # the first fills the cache, the others come from it
        for name in ("AcMe.AGENTS.localhost", "acme.agents.LOCALHOST", ACME):
            response = ns.query(name, "MX", id=None)
            assert response.question[0].name.to_text() == f"{name}."  # byte-exact, as sent
            # Names compressed against the question carry its case: equal to DNS, which ignores case.
            assert [r.lower() for r in rdatas(response, "MX")] == [f"10 mail.{BASE}."]
            assert response.answer[0].name.to_text().lower() == f"{ACME}."


def test_edns_is_honoured_and_big_answers_set_tc(postern, acme, ns):
    class ManyTxt:
        @hookimpl
        def postern_dns_records(self, domain):
            return [DnsRecord(f"big.{domain}", "TXT", f"{i:03d}" + "x" * 300) for i in range(6)]

    plugged(postern, ManyTxt())
    ns.server.store.invalidate(["*"])
    plain = ns.query(f"big.{ACME}", "TXT")  # no EDNS: 512 bytes
    assert plain.flags & dns.flags.TC and not plain.answer and plain.edns < 0
    with_edns = ns.query(f"big.{ACME}", "TXT", use_edns=0, payload=4096)  # ours caps at 1232
    assert with_edns.flags & dns.flags.TC and with_edns.payload == 1232
    over_tcp = ns.query(f"big.{ACME}", "TXT", tcp=True)
    assert len(over_tcp.answer[0]) == 6 and not over_tcp.flags & dns.flags.TC
    fits = ns.query(f"postern._domainkey.{ACME}", "TXT", use_edns=0, payload=1232)
    assert not fits.flags & dns.flags.TC and fits.edns == 0 and fits.answer
    badvers = ns.query(ACME, "SOA", use_edns=1)
    assert badvers.rcode() == dns.rcode.BADVERS and not badvers.answer


def test_any_is_answered_minimally(acme, ns):
    response = ns.query(ACME, "ANY")
    assert response.rcode() == dns.rcode.NOERROR and len(response.answer) == 1  # one RRset (RFC 8482)
    assert ns.query(f"nope.zzz._domainkey.{ACME}", "ANY").rcode() == dns.rcode.NXDOMAIN


def test_new_tenants_and_domains_answer_without_a_restart(postern, acme, ns):
    assert ns.query(f"newco.{BASE}", "SOA").rcode() == dns.rcode.NXDOMAIN  # now cached as such
    newco = make_tenant("newco")

    def answered():
        response = ns.query(f"newco.{BASE}", "SOA")
        return response.rcode() == dns.rcode.NOERROR and response.answer

    wait_for(answered, timeout=60, interval=0.02)  # the ring, not the hour-long refresh
    dmarc = f"_dmarc.eu.newco.{BASE}"
    assert rdatas(ns.query(dmarc, "TXT"), "TXT") == ['"v=spf1 mx -all"']  # only the wildcard so far
    newco.agent_key(domains=[f"eu.newco.{BASE}"])
    wait_for(lambda: rdatas(ns.query(dmarc, "TXT"), "TXT") != ['"v=spf1 mx -all"'], timeout=60, interval=0.02)
    assert rdatas(ns.query(dmarc, "TXT"), "TXT") == ['"v=DMARC1; p=quarantine; adkim=r; aspf=r"']


def test_the_cache_serves_without_the_database(postern, acme, ns):
    from postern.core.models import Customer

    assert rdatas(ns.query(ACME, "MX"), "MX")
    Customer.update(label="renamed").where(Customer.label == "acme").execute()  # behind the server's back
    assert rdatas(ns.query(ACME, "MX"), "MX") == [f"10 mail.{BASE}."]  # still the cached answer
    ns.server.store.invalidate(["*"])  # what a ring or the refresh does
    assert ns.query(ACME, "MX").rcode() == dns.rcode.NXDOMAIN


def test_the_zone_file_lists_every_record(postern, acme):
    text = zones.zone_file(zones.build_zone(postern, ACME))
    assert text.startswith(f"$ORIGIN {ACME}.\n")
    assert f"*.{ACME}.\t300\tIN\tMX\t10 mail.{BASE}." in text
    dkim_line = next(line for line in text.splitlines() if "_domainkey" in line)
    assert dkim_line.count('"') == 4  # two character-strings
    import dns.zone

    parsed = dns.zone.from_text(text, origin=ACME, relativize=False, check_origin=True)
    assert parsed.find_rdataset(f"postern._domainkey.{ACME}.", "TXT")


def test_zones_keep_being_served_while_the_database_is_down(postern, acme):
    import peewee

    from postern.core.db import database
    from postern.plugins.dns_builtin.answers import Answerer
    from postern.plugins.dns_builtin.store import ZoneStore

    answerer = Answerer(ZoneStore(postern))
    query = dns.message.make_query(ACME, "MX")
    assert rdatas(dns.message.from_wire(answerer.answer(query.to_wire())), "MX") == [f"10 mail.{BASE}."]
    working = database.obj
    database.close()
    database.initialize(peewee.SqliteDatabase("/proc/no-such-dir/postern.db"))  # every connect fails
    try:
        answerer.store.invalidate(["*"])  # the refresh comes while the database is away
        stale = dns.message.from_wire(answerer.answer(query.to_wire()))
        assert rdatas(stale, "MX") == [f"10 mail.{BASE}."]  # the last copy, not SERVFAIL
        never_read = dns.message.from_wire(answerer.answer(dns.message.make_query(f"x.{BASE}", "A").to_wire()))
        assert never_read.rcode() == dns.rcode.SERVFAIL  # nothing to fall back on: say so, cache nothing
        assert not any(key[1].startswith(b"\x01x") for key in answerer.cache)
    finally:
        database.initialize(working)
