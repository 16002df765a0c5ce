"""The serving loop: UDP and TCP on one address, on uvloop when installed.

dnslib only encodes and decodes; this loop bounds what it reads (TCP connections
time out when idle and are capped in number, in total and per client address, so one
client holding connections cannot lock the others out of TCP; with every slot taken,
the connection waiting longest for a query makes room for a new one), answers through ``Answerer`` (which
never raises), and listens for zone-change rings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from postern.core.connlimits import ConnectionLimiter
from postern.core.zonebell import ZoneBellListener
from postern.plugins.dns_builtin.answers import Answerer
from postern.plugins.dns_builtin.store import ZoneStore

log = logging.getLogger("postern.dns")

#: Bursts of queries queue here instead of being dropped (the default is ~208 KiB).
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024
#: How often a server whose zone-change subscription was lost tries to subscribe again.
RELISTEN_SECONDS = 5


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, answerer: Answerer):
        self.answerer = answerer
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.answerer.answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # e.g. ICMP port unreachable from a vanished client


class DnsServer:
    """One server: ``await start()``, then ``close()``. Tests run it in-process."""

    def __init__(self, postern, backend):
        self.backend = backend
        self.store = ZoneStore(postern)
        self.answerer = Answerer(self.store, backend.options.max_udp_payload)
        self.database_url = postern.config.database_url
        self.tcp_limiter = ConnectionLimiter(
            "DNS over TCP", backend.options.max_tcp_connections, backend.options.max_tcp_connections_per_client
        )
        self._tcp_tasks: set[asyncio.Task] = set()
        #: Connections waiting for a query: task -> (since when, writer, limiter key).
        self._waiting: dict[asyncio.Task, tuple[float, asyncio.StreamWriter, str]] = {}
        self._closed_for_room: set[asyncio.Task] = set()
        self.tcp_closed_for_room = 0
        self._udp = self._tcp = self._bell = self._refresh = self._relisten = None

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        host, _, port = self.backend.options.bind.rpartition(":")
        host = host.strip("[]")
        self._listen()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.answerer), local_addr=(host, int(port))
        )
        port = self._udp.get_extra_info("sockname")[1]  # the real one when bind asked for port 0
        self._tcp = await asyncio.start_server(self._serve_tcp, host, port)
        self._schedule_refresh()
        self._schedule_relisten()
        log.info("DNS listening on %s port %s (UDP and TCP)", host, port)
        return host, port

    @property
    def tcp_connections(self) -> int:
        return self.tcp_limiter.open

    def _listen(self) -> bool:
        """Subscribe to zone changes. Without the database (PostgreSQL down or restarting)
        the server still starts and answers from what it can read; it tries again every
        RELISTEN_SECONDS, and drops every cached zone once listening again, since rings
        may have been missed meanwhile."""
        try:
            self._bell = ZoneBellListener(self.database_url, self.store.invalidate)
        except Exception as exc:  # noqa: BLE001 (the driver's connection error: serve on, retry)
            log.warning("zone bell: cannot listen (%s); trying again in %ss", exc, RELISTEN_SECONDS)
            self._bell = None
            return False
        return True

    def _schedule_relisten(self) -> None:
        def relisten():
            if (self._bell is None or not self._bell.alive) and self._listen():
                self.store.invalidate(["*"])
            self._schedule_relisten()

        self._relisten = asyncio.get_running_loop().call_later(RELISTEN_SECONDS, relisten)

    def _schedule_refresh(self) -> None:
        def refresh():
            self.store.invalidate(["*"])
            self._schedule_refresh()

        self._refresh = asyncio.get_running_loop().call_later(self.backend.options.refresh_seconds, refresh)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tcp_limiter.open >= self.backend.options.max_tcp_connections:
            self._close_longest_waiting()
        key, refused = self.tcp_limiter.acquire(writer.get_extra_info("peername"))
        if refused:
            writer.close()  # over a cap: the client falls back to another server or retries
            return
        task = asyncio.current_task()
        self._tcp_tasks.add(task)
        idle = self.backend.options.tcp_idle_timeout
        loop = asyncio.get_running_loop()
        since = loop.time()  # connected, or last answered
        try:
            while task not in self._closed_for_room:
                self._waiting[task] = (since, writer, key)
                head = await asyncio.wait_for(reader.readexactly(2), idle)
                query = await asyncio.wait_for(reader.readexactly(int.from_bytes(head)), idle)
                if self._waiting.pop(task, None) is None:
                    break  # closed for room while its query was arriving
                reply = self.answerer.answer(query, tcp=True)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2) + reply)
                await asyncio.wait_for(writer.drain(), idle)
                since = loop.time()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client finished, went quiet or went away: all normal ends of a connection
        except asyncio.CancelledError:
            pass  # the server is closing
        finally:
            self._waiting.pop(task, None)
            if task in self._closed_for_room:
                self._closed_for_room.discard(task)  # its slot was released when it was closed
            else:
                self.tcp_limiter.release(key)
            self._tcp_tasks.discard(task)
            writer.close()

    def _close_longest_waiting(self) -> None:
        """Every TCP slot is taken: close the connection that has waited longest for a
        query (since it connected or was last answered), so a new client's query is
        served instead of turned away. RFC 7766 6.2.3 lets a server under pressure close
        idle connections; many clients each within their share cannot then hold every
        slot, and a client sending its query now (the newest) is the last to go."""
        if not self._waiting:
            return  # every connection is being answered: the new one is refused
        task = min(self._waiting, key=lambda t: self._waiting[t][0])
        _, writer, key = self._waiting.pop(task)
        self._closed_for_room.add(task)
        self.tcp_limiter.release(key)
        self.tcp_closed_for_room += 1
        writer.transport.abort()

    async def close(self) -> None:
        for timer in (self._refresh, self._relisten):
            if timer is not None:
                timer.cancel()
        if self._bell is not None:
            self._bell.close()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._tcp_tasks):
                task.cancel()
            await asyncio.gather(*self._tcp_tasks, return_exceptions=True)
            await self._tcp.wait_closed()


def run_dns(postern) -> None:
    """Service entry point (``postern service run dns``): serve until SIGTERM."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(postern))


async def _serve(postern) -> None:
    server = DnsServer(postern, postern.backend("dns"))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
