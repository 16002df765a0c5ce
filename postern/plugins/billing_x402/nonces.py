"""Where the offline facilitator (facilitator.py) keeps spent nonces: one authorisation
settles once. In memory, in an SQLite file shared by processes, or through two
callbacks (Postern's own ``x402_payment`` table, postern/plugins/billing_x402/store.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol


class NonceKey(NamedTuple):
    """One authorisation as the token contract tracks it (``authorizationState(payer,
    nonce)`` per chain and token), all lowercase."""

    network: str
    asset: str
    payer: str
    nonce: str

    @property
    def transaction(self) -> str:
        """The fake transaction hash its settlement reports: always the same for one
        authorisation, never shared by two."""
        return "0x" + hashlib.sha256("|".join(self).encode()).hexdigest()


class SpentNonces(Protocol):
    """Where spent nonces are kept; Postern will keep them in its database."""

    def is_spent(self, key: NonceKey) -> bool: ...

    def spend(self, key: NonceKey) -> bool:
        """Record ``key`` as spent; False when it already was. Atomic: of two settlers of
        one authorisation (threads or processes), only one may see True."""
        ...


class MemoryNonces:
    """Spent nonces in this process only."""

    def __init__(self) -> None:
        self._spent: set[NonceKey] = set()
        self._lock = threading.Lock()

    def is_spent(self, key: NonceKey) -> bool:
        return key in self._spent

    def spend(self, key: NonceKey) -> bool:
        with self._lock:
            if key in self._spent:
                return False
            self._spent.add(key)
            return True


class SqliteNonces:
    """Spent nonces in an SQLite file, shared by every process that opens it, so two workers
    cannot both settle one authorisation. One connection per call: the facilitator runs on
    whichever thread the server hands it."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS x402_spent_nonces (network TEXT NOT NULL, asset TEXT NOT NULL,"
                " payer TEXT NOT NULL, nonce TEXT NOT NULL, PRIMARY KEY (network, asset, payer, nonce))"
            )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction: committed, or rolled back on error
                yield db
        finally:
            db.close()

    def is_spent(self, key: NonceKey) -> bool:
        with self._connection() as db:
            query = "SELECT 1 FROM x402_spent_nonces WHERE network = ? AND asset = ? AND payer = ? AND nonce = ?"
            return db.execute(query, key).fetchone() is not None

    def spend(self, key: NonceKey) -> bool:
        with self._connection() as db:
            # The primary key makes the insert the test-and-set: of two racing ones, one inserts nothing.
            return db.execute("INSERT OR IGNORE INTO x402_spent_nonces VALUES (?, ?, ?, ?)", key).rowcount == 1


@dataclass(frozen=True)
class CallbackNonces:
    """Spent nonces kept by the caller, e.g. in Postern's database through two functions."""

    is_spent: Callable[[NonceKey], bool]
    spend: Callable[[NonceKey], bool]
