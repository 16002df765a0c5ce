"""From query bytes to reply bytes: a cache of packed replies in front of dnslib.

A plain query (one question, no compression in it, at most an OPT record) is keyed
by its lower-cased name, type, class, EDNS state and the size limit of its
transport. A hit copies the cached reply, rewriting only the ID, the RD and CD bits
and the question bytes (echoed exactly: resolvers randomise letter case). Anything
else, and every miss, goes through dnslib inside one ``except Exception``: a packet
that cannot be parsed gets FORMERR (or is dropped when it has no header), and the
next packet is served as usual. A ring from ``zonebell`` clears the cache.
"""

from __future__ import annotations

import logging

from dnslib import CLASS, EDNS0, QTYPE, RCODE, DNSHeader, DNSRecord

from postern.core import metrics
from postern.plugins.dns_builtin.store import ZoneStore, ZoneUnavailable
from postern.plugins.dns_builtin.wire import parse_query

log = logging.getLogger("postern.dns")

MAX_QUERY = 4096  # larger queries are not DNS a resolver sends; dropping them bounds parse cost
MAX_CACHED = 50_000
TCP_LIMIT = 65535
NOT_SERVED = {QTYPE.AXFR, QTYPE.IXFR, QTYPE.OPT}
BADVERS = 16


class Answerer:
    def __init__(self, store: ZoneStore, max_udp_payload: int = 1232):
        self.store = store
        self.max_udp_payload = max_udp_payload
        self.cache: dict[tuple, bytes] = {}
        store.on_change = self.cache.clear

    def answer(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply to ``data``, or None to send nothing. Never raises. Counted by
        transport and rcode (``postern_dns_queries``)."""
        reply = self._answer(data, tcp)
        metrics.DNS_QUERIES.labels("tcp" if tcp else "udp", metrics.dns_rcode(reply)).inc()
        return reply

    def _answer(self, data: bytes, tcp: bool) -> bytes | None:
        if len(data) > (TCP_LIMIT if tcp else MAX_QUERY):
            return None
        key = self._key(data, tcp)
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return _stamp(cached, data, key[0])
        try:
            reply = self._slow(data, tcp)
            reply = None if reply is None else bytes(reply)  # dnslib packs into a bytearray
        except Exception:  # a hostile packet must never take the server down
            log.debug("unparseable DNS packet of %d bytes", len(data), exc_info=True)
            return _formerr(data)
        if reply is not None and key is not None and reply[3] & 0x0F != RCODE.SERVFAIL:
            if len(self.cache) >= MAX_CACHED:
                self.cache.clear()
            self.cache[key] = reply
        return reply

    def _key(self, data: bytes, tcp: bool) -> tuple | None:
        """The cache key of a plain query, or None to take the slow path."""
        if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00" or data[10]:
            return None  # a reply, another opcode, or not exactly one question and no answers
        position = 12
        while True:
            length = data[position]
            if length == 0:
                break
            if length > 63 or position + length > 268:  # a pointer, or longer than a name can be
                return None
            position += length + 1
            if position >= len(data):
                return None
        name_end = position + 1
        question_end = name_end + 4
        additional = data[11]
        if additional == 0:
            if question_end != len(data):
                return None
            limit = TCP_LIMIT if tcp else 512
            edns = None
        elif additional == 1:
            opt = data[question_end : question_end + 11]
            if len(opt) < 11 or opt[0] != 0 or opt[1:3] != b"\x00\x29":
                return None
            if question_end + 11 + int.from_bytes(opt[9:11]) != len(data):
                return None
            size = max(512, min(int.from_bytes(opt[3:5]), self.max_udp_payload))
            limit = TCP_LIMIT if tcp else size
            edns = (opt[5], opt[6], opt[7] & 0x80)  # extended rcode, version, DO
        else:
            return None
        return (question_end, data[12:name_end].lower(), data[name_end:question_end], edns, limit)

    def _slow(self, data: bytes, tcp: bool) -> bytes | None:
        query = parse_query(data)
        header = query.header
        if header.qr:
            return None  # a reply sent to us: answering could loop between servers
        reply = DNSRecord(DNSHeader(id=header.id, qr=1, opcode=header.opcode, rd=header.rd))
        reply.header.cd = header.cd
        opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
        if opts:
            reply.add_ar(EDNS0(udp_len=self.max_udp_payload))
        if len(opts) > 1 or len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        question = query.q
        reply.add_question(question)
        if header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return reply.pack()
        if opts and (opts[0].ttl >> 16) & 0xFF:  # EDNS version other than 0
            reply.ar[0].ttl = (BADVERS >> 4) << 24
            return reply.pack()
        name = str(question.qname).lower().rstrip(".")
        try:
            zone = self.store.zone_for(name) if question.qclass == CLASS.IN else None
            if zone is None or question.qtype in NOT_SERVED:
                reply.header.rcode = RCODE.REFUSED  # not ours: no recursion, no open resolver
                return reply.pack()
            found = zone.lookup(name, question.qtype, owner=question.qname)
        except ZoneUnavailable:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        reply.header.aa = 1
        reply.header.rcode = found.rcode
        for rr in found.answers:
            reply.add_answer(rr)
        for rr in found.authority:
            reply.add_auth(rr)
        packed = reply.pack()
        limit = TCP_LIMIT if tcp else (max(512, min(opts[0].rclass, self.max_udp_payload)) if opts else 512)
        if len(packed) > limit:
            # Too big for this UDP client: TC, no records, and it retries over TCP.
            reply.rr, reply.auth = [], []
            reply.header.tc = 1
            packed = reply.pack()
        return packed


def _stamp(cached: bytes, query: bytes, question_end: int) -> bytes:
    """The cached reply for this query: its ID, RD and CD bits, and question bytes."""
    flags = bytes(((cached[2] & 0xFE) | (query[2] & 0x01), (cached[3] & 0xEF) | (query[3] & 0x10)))
    return query[:2] + flags + cached[4:12] + query[12:question_end] + cached[question_end:]


def _formerr(data: bytes) -> bytes | None:
    """FORMERR with the query's ID and opcode and nothing else; None without a header
    or for a reply (never answer a reply)."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    return data[:2] + bytes((0x80 | (data[2] & 0x79), RCODE.FORMERR)) + b"\x00" * 8
