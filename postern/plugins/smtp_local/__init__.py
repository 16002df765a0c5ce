"""``smtp_local``: the embedded default backend. Receive: an aiosmtpd listener that
accepts mail for this Postern's inboxes only and answers 250 after the commit.
Send: relay through a smarthost, or capture locally (the development default)."""

from postern.core.hookspecs import hookimpl
from postern.core.services import Service
from postern.plugins.smtp_local.receiver import SmtpLocalReceiver, run_smtp
from postern.plugins.smtp_local.sender import SmtpLocalSender


@hookimpl
def postern_register_backends(register):
    register("receive", SmtpLocalReceiver.name, SmtpLocalReceiver)
    register("send", SmtpLocalSender.name, SmtpLocalSender)


@hookimpl
def postern_services(postern):
    if postern.config.role("receive").backend != SmtpLocalReceiver.name:
        return []
    return [Service("smtp", run_smtp, "SMTP listener for inbound mail (aiosmtpd)", notifies_ready=True)]


@hookimpl
def postern_spf_mechanisms(postern):
    if postern.config.role("send").backend != SmtpLocalSender.name:
        return None
    return list(postern.backend("send").options.spf)
