"""One zone, indexed for answering: names, empty non-terminals, wildcards (RFC 1034 4.3.2,
RFC 4592), NXDOMAIN versus NODATA, and minimal ANY (RFC 8482)."""

from __future__ import annotations

from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR

from postern.core.zones import Zone, presentation

ANY, CNAME, SOA = QTYPE.ANY, QTYPE.CNAME, QTYPE.SOA


@dataclass(frozen=True)
class Answer:
    rcode: int
    answers: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()


class ZoneIndex:
    """A zone's records as dnslib RRs by owner name and type."""

    def __init__(self, zone: Zone):
        self.apex = zone.apex
        self.rrsets: dict[str, dict[int, list[RR]]] = {}
        for record in zone.records:
            [rr] = RR.fromZone(f"{record.name}. {record.ttl} IN {record.rtype} {presentation(record)}")
            self.rrsets.setdefault(record.name, {}).setdefault(rr.rtype, []).append(rr)
        # Empty non-terminals (e.g. _domainkey.<apex> above <selector>._domainkey.<apex>)
        # exist: a query for one is NODATA, never NXDOMAIN, and they block wildcards.
        self.names = set(self.rrsets)
        for name in self.rrsets:
            while name != self.apex and "." in name:
                name = name.split(".", 1)[1]
                self.names.add(name)
        soa = self.rrsets[self.apex][SOA][0]
        # RFC 2308: a negative answer's SOA lives for min(SOA TTL, SOA MINIMUM).
        self.negative_soa = RR(soa.rname, SOA, ttl=min(soa.ttl, soa.rdata.times[-1]), rdata=soa.rdata)

    def lookup(self, qname: str, qtype: int, owner=None) -> Answer:
        """``qname`` is lower-case, without the final dot, and inside this zone. ``owner``
        (the question's name as received, a ``DNSLabel``) owns records a wildcard
        synthesises: ``qname`` is text with ``\\ddd`` escapes for octets that are not
        letters, digits or hyphens, and dnslib cannot turn that text back into those
        octets (it runs it through IDNA), so a wildcard answer to a name with such an
        octet raised and the query got FORMERR."""
        types = self.rrsets.get(qname)
        if types is not None:
            return self._from(types, qtype, None)
        if qname in self.names:
            return Answer(RCODE.NOERROR, (), (self.negative_soa,))
        encloser = qname
        while encloser not in self.names:
            encloser = encloser.split(".", 1)[1]
        wildcard = self.rrsets.get(f"*.{encloser}")
        if wildcard is not None:
            return self._from(wildcard, qtype, owner or qname)
        return Answer(RCODE.NXDOMAIN, (), (self.negative_soa,))

    def _from(self, types: dict[int, list[RR]], qtype: int, synthesised_owner) -> Answer:
        if qtype == ANY:  # RFC 8482: one RRset is a complete answer
            qtype = next(iter(types))
        found = types.get(qtype) or types.get(CNAME)
        if not found:
            return Answer(RCODE.NOERROR, (), (self.negative_soa,))
        if synthesised_owner is not None:
            found = [RR(synthesised_owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in found]
        return Answer(RCODE.NOERROR, tuple(found))
