"""Webhooks: signed event deliveries, queued with the event and sent by a dispatcher.

- ``events``: what ingest, outbound and inboxes call inside their transactions; it
  writes one ``WebhookDelivery`` per matching webhook, so no event commits without them.
- ``manage``: create, list, update, delete, rotate secrets, deliveries, retry, test.
- ``dispatch``: the service that claims due deliveries atomically and sends them.
- ``signing``: Standard Webhooks signatures and the encryption of secrets at rest.
- ``destinations``: which URLs may be called, checked again at connect time.
"""

EVENT_TYPES = (
    "message.received",
    "message.sent",
    "message.failed",
    "message.bounced",
    "message.complained",
    "message.cancelled",
    "message.pending_approval",
    "message.approved",
    "message.rejected",
    "message.expired",
    "inbox.created",
    "inbox.deleted",
    "domain.verified",
)
#: Sent by ``POST /v1/webhooks/{id}/test`` whatever the webhook subscribes to.
TEST_EVENT = "webhook.test"
