"""How a wait hands mail over, in the words docs/mail.md ("Delivery cursors") uses.

One constant for the tool description and the docs, so the two cannot drift apart:
tests/test_mcp.py checks that docs/mail.md contains it word for word.
"""

DELIVERY_CURSORS = (
    "Without a cursor, a wait returns every message of the inbox that no earlier wait without a cursor "
    "has returned to this agent, oldest first, including mail that arrived before the first wait, and "
    "returns each message to this agent only once, even when waits race. With a cursor, a wait returns "
    "the messages newer than that cursor and moves nothing. Listing or reading messages never counts "
    "as returning them."
)
