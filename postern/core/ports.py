"""Which processes hold a listening TCP port: for the message that says why a listener
could not bind (``address already in use``). Linux only, read from ``/proc``; elsewhere,
or without permission to look, the answer is empty."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

TCP_LISTEN = "0A"
_ADDRESS = re.compile(r"\(['\"]?[^,'\"]*['\"]?, (\d+)")  # asyncio: "... on address ('127.0.0.1', 2525)"


def listening_pids(port: int) -> list[int]:
    """Pids of the processes that hold a socket listening on ``port`` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for entry in os.scandir("/proc") if inodes and os.path.isdir("/proc") else []:
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
            if any(os.readlink(f"/proc/{entry.name}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to look at
    return sorted(pids)


def describe_bind_error(exc: BaseException) -> str:
    """``exc`` in a line; for a port already in use, which processes hold it."""
    text = str(exc) or type(exc).__name__
    if not (isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE):
        return text
    found = _ADDRESS.search(text)
    holders = listening_pids(int(found.group(1))) if found else []
    if holders:
        return f"{text}; port {found.group(1)} held by pid {', '.join(map(str, holders))}"
    return text
