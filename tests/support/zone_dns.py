"""A small authoritative DNS server on 127.0.0.1 for sender-verdict tests: serves the
TXT, A and MX records it is given (DKIM keys, SPF and DMARC policies) over real UDP,
or, ``silent``, takes every query and never answers."""

from __future__ import annotations

import socket
import threading

from dnslib import QTYPE, RR, DNSRecord


class ZoneDns:
    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None, *, silent: bool = False):
        self.records = {(name.lower().rstrip("."), qtype): values for (name, qtype), values in (records or {}).items()}
        self.silent = silent
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def add(self, name: str, qtype: str, *values: str) -> None:
        self.records.setdefault((name.lower().rstrip("."), qtype), []).extend(values)

    def _serve(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            request = DNSRecord.parse(data)
            name, qtype = str(request.q.qname).lower().rstrip("."), QTYPE[request.q.qtype]
            self.queries.append((name, qtype))
            if self.silent:
                continue
            reply = request.reply()
            values = self.records.get((name, qtype), [])
            if not values and not any(n == name for n, _ in self.records):
                reply.header.rcode = 3  # NXDOMAIN
            for value in values:
                if qtype == "TXT":
                    # Long keys go out as 255-byte strings, as a zone file splits them.
                    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
                    reply.add_answer(*RR.fromZone(f"{name}. 60 IN TXT {chunks}"))
                else:
                    reply.add_answer(*RR.fromZone(f"{name}. 60 IN {qtype} {value}"))
            self.sock.sendto(reply.pack(), peer)

    def close(self):
        self._stop = True
        self.sock.close()
