"""The Postern Python SDK. For now: verifying webhook deliveries.

It depends on nothing of the server, so receivers can use it on their own.
"""

from postern.client.webhooks import WebhookVerificationError, verify_webhook

__all__ = ["WebhookVerificationError", "verify_webhook"]
