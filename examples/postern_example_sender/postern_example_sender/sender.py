"""``example``: a send backend that drops each outbound message, as the MIME bytes the
core built, into a directory (a "pickup folder" that another program, or a test,
reads). Chosen with::

    [send]
    backend = "example"

    [send.example]
    directory = "/var/spool/postern-out"   # required
    spf = ["ip4:192.0.2.10"]                # optional: who sends mail for the domains
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from postern.core.backends import OutboundMessage, Sender, SendResult, TemporaryFailure


class DropFolderSender(Sender):
    name = "example"
    description = "drops each outbound message into a directory (example plugin)"

    def __init__(self, directory: Path, spf: list[str]):
        self.directory = directory
        self.spf = spf

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> DropFolderSender:
        # Refuse anything unknown or mistyped: start-up names the [send.example] table.
        unknown = set(options) - {"directory", "spf"}
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(sorted(unknown))}")
        directory = options.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ValueError('directory is required, e.g. "/var/spool/postern-out"')
        spf = options.get("spf", [])
        if not isinstance(spf, list) or not all(isinstance(m, str) for m in spf):
            raise ValueError('spf must be a list of SPF mechanisms, e.g. ["ip4:192.0.2.10"]')
        return cls(Path(directory), spf)

    def send(self, message: OutboundMessage) -> SendResult:
        # Called by the core with the message ready to leave; raise TemporaryFailure to
        # have the outbox retry, PermanentFailure to fail the message for good.
        target = self.directory / f"{message.postern_id}.eml"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".tmp")
            partial.write_bytes(message.raw)
            os.replace(partial, target)  # a reader never sees half a message
        except OSError as exc:
            raise TemporaryFailure(f"cannot write {target}: {exc}") from exc
        return SendResult(self.name, target.name, "sent")

    # Optional methods: the core calls them on the active send backend only.

    def spf_mechanisms(self, postern, domain: str) -> list[str]:
        return list(self.spf)

    def dkim_sign(self, postern, sender: str, raw: bytes) -> bytes:
        # Mail leaves as is, so sign it with the tenant's key Postern publishes.
        from postern.core.signing import sign_as

        return sign_as(postern, sender, raw)
