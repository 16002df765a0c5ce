"""Real faults for tests: a held SQLite write lock, a TCP link to PostgreSQL that can be
cut and restored, and a data directory on a small file system that can be filled."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest


@contextlib.contextmanager
def sqlite_write_lock(path: Path):
    """Another connection holding ``BEGIN EXCLUSIVE`` on the database file, as a backup
    tool or a stuck process would. In WAL mode readers still read; writers wait out their
    busy timeout and fail with "database is locked"."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


class TcpProxy:
    """A loopback TCP proxy to ``target`` that can be cut (every open connection is
    aborted and new ones are closed at once) and restored. Pointing a server at it
    takes its database away without touching the shared database server."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._open = True
        self._links: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self.accepted = 0  # connections made while the link was up, to show the server reconnected

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def cut(self) -> None:
        self._call(self._cut)

    def restore(self) -> None:
        self._call(self._restore)

    def _call(self, fn) -> None:
        asyncio.run_coroutine_threadsafe(fn(), self._loop).result()

    async def _cut(self) -> None:
        self._open = False
        for transport in list(self._links):
            transport.abort()
        self._links.clear()

    async def _restore(self) -> None:
        self._open = True

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        await self._cut()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._links.update((writer.transport, up_writer.transport))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy is closing
        self._links.difference_update((writer.transport, up_writer.transport))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str = "16m", owner: str = ""):
    """A tmpfs of ``size`` at ``mountpoint``: writes past its end fail with ENOSPC, which
    is what a full disk gives. Needs CAP_SYS_ADMIN (root here and in CI); skips otherwise.
    ``owner`` ("uid:gid") makes its root directory someone else's (PostgreSQL's)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    mountpoint.chmod(0o755)
    ids = ",uid={},gid={}".format(*owner.split(":")) if owner else ""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700{ids}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system has no space left."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                break
        # Byte by byte to the last block: the database must find no room at all.
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0"):
                pass
    finally:
        os.close(fd)
    return filler


class BadRelay:
    """A TCP listener that misbehaves as a smarthost can: ``hang`` accepts and never says
    a word; ``drop`` accepts and closes at once; ``drip`` greets one byte every 0.2 s and
    never ends the line, so no single read waits long. Connections are counted."""

    def __init__(self, mode: str):
        assert mode in ("hang", "drop", "drip")
        self.mode = mode
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"relay-{mode}", daemon=True)

    def __enter__(self) -> BadRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        self.release()

    def release(self) -> None:
        """Hang up on every held connection."""
        for conn in self._held:
            conn.close()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)  # to notice the stop; closing does not wake accept()
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            if self.mode == "drop":
                conn.close()
            else:
                self._held.append(conn)
            if self.mode == "drip":
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        for byte in itertools.chain(b"220 ", itertools.repeat(ord("."))):
            if self._stop.wait(0.2):
                return
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return  # the client hung up
