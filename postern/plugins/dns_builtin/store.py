"""Zones read from the database on first need, kept until a ring or the refresh drops them.

The tenant labels are held as a set, so a query for a random name under the base
domain costs no database read. When the database is unreachable the last copy of a
zone keeps being served (stale beats SERVFAIL for data that rarely changes).
"""

from __future__ import annotations

import logging

import peewee

from postern.core.db import database
from postern.core.errors import BackendError
from postern.core.models import Customer
from postern.core.zones import build_zone, zone_apex
from postern.plugins.dns_builtin.lookup import ZoneIndex

log = logging.getLogger("postern.dns")


class ZoneUnavailable(BackendError):
    """The zone could not be read and no earlier copy exists (answer SERVFAIL)."""


class ZoneStore:
    def __init__(self, postern, on_change=None):
        self.postern = postern
        self.base = postern.config.mail.domain
        self.on_change = on_change or (lambda: None)
        self._zones: dict[str, ZoneIndex | None] = {}
        self._stale: dict[str, ZoneIndex | None] = {}
        self._labels: set[str] | None = None
        self._stale_labels: set[str] = set()

    def zone_for(self, qname: str) -> ZoneIndex | None:
        """The zone answering for ``qname``; None when Postern is not authoritative."""
        apex = zone_apex(self.base, qname)
        if apex is None:
            return None
        if apex != self.base and apex[: -len(self.base) - 1] in self._tenant_labels():
            zone = self._get(apex)
            if zone is not None:
                return zone
        return self._get(self.base)

    def invalidate(self, items: list[str]) -> None:
        """Drop what a ring names: ``*``, ``label:<label>`` or a domain."""
        for item in items:
            if item == "*":
                self._stale.update(self._zones)
                self._zones.clear()
                self._stale_labels = self._labels or self._stale_labels
                self._labels = None
                continue
            if item.startswith("label:"):
                if self._labels is not None:
                    self._labels.add(item[6:])
                apex = f"{item[6:]}.{self.base}"
            else:
                apex = zone_apex(self.base, item.lower().rstrip("."))
            if apex is not None and apex in self._zones:
                self._stale[apex] = self._zones.pop(apex)
        self.on_change()

    def _tenant_labels(self) -> set[str]:
        if self._labels is None:
            try:
                self._labels = set(self._read(lambda: [label for (label,) in Customer.select(Customer.label).tuples()]))
            except ZoneUnavailable:
                if not self._stale_labels:
                    raise
                return self._stale_labels
        return self._labels

    def _get(self, apex: str) -> ZoneIndex | None:
        if apex in self._zones:
            return self._zones[apex]
        try:
            zone = self._read(lambda: build_zone(self.postern, apex))
            index = ZoneIndex(zone) if zone is not None else None
        except ZoneUnavailable:
            if apex not in self._stale:
                raise
            return self._stale[apex]
        self._zones[apex] = index
        self._stale.pop(apex, None)
        return index

    def _read(self, fn):
        try:
            database.connect(reuse_if_open=True)
            return fn()
        except peewee.PeeweeException as exc:
            log.warning("DNS zone data unavailable: %s", exc)
            database.close()
            raise ZoneUnavailable(str(exc)) from exc
