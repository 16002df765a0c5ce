"""Reading a query off the wire more leniently than ``DNSRecord.parse``.

dnslib refuses two things a legal query may carry (checked in docs/reliability.md):
a label that is not UTF-8 (RFC 2181 §11: a label is any octets) and a resource record
with empty RDATA (legal for any type, e.g. an unknown one under RFC 3597). Either made
a whole query FORMERR. A query's answer and authority sections, and every additional
record but OPT, mean nothing to an authoritative server, so they are skipped unread;
only the header, the questions and OPT records are decoded.
"""

from __future__ import annotations

from dnslib import QTYPE, RR, DNSHeader, DNSQuestion, DNSRecord
from dnslib.bimap import BimapError
from dnslib.bit import get_bits
from dnslib.buffer import BufferError
from dnslib.dns import DNSError
from dnslib.label import DNSBuffer, DNSLabel


class LenientBuffer(DNSBuffer):
    """dnslib's buffer with a name decoder that takes any label bytes."""

    def decode_name(self, last=-1):
        labels = []
        while True:
            (length,) = self.unpack("!B")
            if get_bits(length, 6, 2) == 3:
                self.offset -= 1
                pointer = get_bits(self.unpack("!H")[0], 0, 14)
                save = self.offset
                if last == save or pointer >= self.offset - 2:
                    # Only backwards pointers, as dnslib: no loops, and recursion depth is
                    # bounded by the caller's RecursionError handler (docs/security.md).
                    raise BufferError(f"bad compression pointer at offset {self.offset}")
                self.offset = pointer
                labels.extend(self.decode_name(save).label)
                self.offset = save
                return DNSLabel(labels)
            if length == 0:
                return DNSLabel(labels)
            if length > 63:
                raise BufferError(f"label length {length} at offset {self.offset}")
            labels.append(self.get(length))


def parse_query(packet: bytes) -> DNSRecord:
    """The header, questions and OPT records of ``packet``; raises ``DNSError`` (or
    ``RecursionError`` on pointer chains) for a packet that is not DNS."""
    buffer = LenientBuffer(packet)
    try:
        header = DNSHeader.parse(buffer)
        questions = [DNSQuestion.parse(buffer) for _ in range(header.q)]
        opts = []
        for _ in range(header.a + header.auth + header.ar):
            start = buffer.offset
            buffer.decode_name()
            rtype, _rclass, _ttl, rdlength = buffer.unpack("!HHIH")
            if rtype == QTYPE.OPT:
                buffer.offset = start
                opts.append(RR.parse(buffer))
            else:
                buffer.get(rdlength)  # get() raises when the packet is shorter than claimed
    except (BufferError, BimapError, ValueError) as exc:
        raise DNSError(f"unparseable query at offset {buffer.offset}: {exc}") from None
    # Header counts describe the packet read; the record built keeps what was kept.
    return DNSRecord(header, questions, ar=opts)
