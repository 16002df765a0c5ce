"""DKIM-signing outbound mail with the key its tenant zone publishes.

The lookup goes sender -> tenant zone (``zones``) -> that zone's key (``dkim``); it
lives here, above both, so that ``zones`` can publish ``dkim``'s keys without
``dkim`` reaching back up into ``zones``. A send backend that relays mail as is calls
``sign_as`` from its ``Sender.dkim_sign``.
"""

from __future__ import annotations

from postern.core import dkim
from postern.core.errors import BackendUnavailable
from postern.core.zones import customer_of, settings_of, zone_apex


def sign_as(postern, sender: str, raw: bytes) -> bytes:
    """``raw`` signed with the key of the tenant domain ``sender`` belongs to.

    Unchanged when the sender is in no tenant zone, or when the active send backend
    publishes DKIM records of its own for the domain (it signs). Raises
    ``dkim.DkimKeyUnavailable``.
    """
    base = postern.config.mail.domain
    apex = zone_apex(base, sender.rpartition("@")[2].lower())
    customer = customer_of(base, apex) if apex else None
    if customer is None:
        return raw
    backend = postern.active("send")
    if backend is not None and backend.dkim_records(postern, apex) is not None:
        return raw
    try:
        selector = settings_of(postern).dkim_selector
    except BackendUnavailable:
        selector = dkim.DEFAULT_SELECTOR
    return dkim.sign(postern.config, dkim.ensure_key(postern.config, customer, apex, selector), raw)
