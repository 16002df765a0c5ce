"""A process listening on one bell channel, for tests: ``python bell_ear.py CHANNEL URL``.

Prints ``listening`` once its listener listens, then one line per ring: the topics it
was given, space-separated (``*`` for ``bell.ALL``). Runs until killed."""

from __future__ import annotations

import asyncio
import sys

from postern.core import bell


async def main(channel: str, url: str) -> None:
    ear = bell.AsyncListener(channel, url, lambda topics: print(" ".join(topics), flush=True))
    while not ear.listener.listening:
        await asyncio.sleep(0.01)
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
