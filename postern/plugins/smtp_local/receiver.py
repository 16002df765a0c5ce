"""The smtp_local receive backend: the core's SMTP listener, each message stored in the
core's database before the 250 (the service itself is ``intake``)."""

from __future__ import annotations

from postern.core.backends import InboxRef, Listen, Receiver
from postern.core.services import Service
from postern.core.smtp.options import ListenerOptions


class SmtpLocalReceiver(Receiver):
    """Inboxes live in the core's database, so the listener needs no provisioning:
    an address is receivable from the moment its inbox row commits."""

    name = "smtp_local"
    description = "SMTP listener (aiosmtpd); inboxes stored in Postern's database"
    options_class = ListenerOptions

    def __init__(self, options: ListenerOptions | None = None):
        self.options = options or ListenerOptions()

    def provision(self, inbox: InboxRef) -> None:
        """Nothing to do: RCPT TO is answered from the inbox table."""

    def deprovision(self, inbox: InboxRef) -> None:
        """Nothing to do: a deleted inbox's address is refused at RCPT from then on."""

    def services(self, postern) -> list[Service]:
        return [Service("smtp", run_smtp, "SMTP listener for inbound mail (aiosmtpd)", notifies_ready=True)]

    def listens(self) -> list[Listen]:
        o = self.options
        return [Listen("SMTP listener", o.bind, tls_cert=o.tls_cert, tls_key=o.tls_key)]


def run_smtp(postern) -> None:
    """Service entry point (``postern service run smtp``): serve until SIGTERM."""
    from postern.plugins.smtp_local.intake import serve  # this process only (intake's docstring)

    serve(postern)
