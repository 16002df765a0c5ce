"""``smtp_local``: the embedded default backend. Receive: an aiosmtpd listener that
accepts mail for this Postern's inboxes only and answers 250 after the commit
(``SmtpLocalReceiver.services``). Send: relay through a smarthost, DKIM-signed, or
capture locally (the development default)."""

from postern.core.hookspecs import hookimpl
from postern.plugins.smtp_local.receiver import SmtpLocalReceiver
from postern.plugins.smtp_local.sender import SmtpLocalSender


@hookimpl
def postern_register_backends(register):
    register("receive", SmtpLocalReceiver.name, SmtpLocalReceiver)
    register("send", SmtpLocalSender.name, SmtpLocalSender)
