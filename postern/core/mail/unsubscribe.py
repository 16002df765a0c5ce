"""One-click unsubscribe (RFC 8058) for bulk mail: the two headers each outside
recipient's copy carries, with a link of its own (docs/deliverability.md).

Large mailbox providers require it of bulk senders: the reader's "unsubscribe" button
POSTs ``List-Unsubscribe=One-Click`` to the https link, and Postern puts the address on
the customer's suppression list (``POST /v1/unsubscribe/{token}``). The link names one
recipient, so bulk mail leaves as one copy per recipient, each DKIM-signed with these
headers covered (RFC 8058 section 4 requires the signature to cover them).
"""

from __future__ import annotations

from postern.core import suppression


def url(postern, token: str) -> str:
    return f"{postern.config.server.public_url.rstrip('/')}/v1/unsubscribe/{token}"


def available(postern) -> bool:
    """A link needs the public https address of the API (``server.public_url``):
    without one no mail client could follow it, and no header is added."""
    return postern.config.server.public_url.startswith("https://")


def headers_for(postern, customer_id: str, address: str, message_id: str) -> bytes:
    """The header lines for one recipient's copy, with a new link (only its token's
    hash is stored)."""
    token = suppression.unsubscribe_token(customer_id, address, message_id)
    return (
        f"List-Unsubscribe: <{url(postern, token)}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode("ascii")
