"""``wildduck``: WildDuck as the mailbox store behind Postern's inboxes.

Every inbox is a WildDuck user (REST API); inbound mail reaches WildDuck over LMTP,
from Postern's own SMTP listener or from an operator's MX; a watcher follows WildDuck
and feeds each new message through the core's ingest exactly once; sent messages are
appended to the mailbox's Sent folder. docs/wildduck.md describes the setup.
"""

import logging

from postern.core.backends import DnsRecord
from postern.core.hookspecs import hookimpl
from postern.core.services import Service
from postern.plugins.wildduck.receiver import WildDuckReceiver

log = logging.getLogger("postern.wildduck")


def _active(postern) -> bool:
    # Hook tests call with postern=None: a plugin with no Postern has nothing to say.
    return postern is not None and postern.config.role("receive").backend == WildDuckReceiver.name


@hookimpl
def postern_register_backends(register):
    register("receive", WildDuckReceiver.name, WildDuckReceiver)


@hookimpl
def postern_services(postern):
    if not _active(postern):
        return []
    from postern.plugins.wildduck.watcher import run_watcher

    services = [Service("wildduck-watcher", run_watcher, "follows WildDuck for new mail and ingests it")]
    if postern.backend("receive").options.smtp_bind:
        from postern.plugins.wildduck.frontdoor import run_front_door

        services.append(
            Service("smtp", run_front_door, "SMTP listener handing mail to WildDuck over LMTP", notifies_ready=True)
        )
    return services


@hookimpl
def postern_register_commands(cli):
    from postern.plugins.wildduck.commands import register

    register(cli)


@hookimpl
def postern_dns_records(postern, domain):
    """With ``mx_host`` set, an operator's MX sits in front of WildDuck: publish it
    preferred (5) over the core's own MX (10), which stays as the fallback."""
    if not _active(postern) or not postern.backend("receive").options.mx_host:
        return None
    mx = f"5 {postern.backend('receive').options.mx_host.rstrip('.')}"
    return [DnsRecord(domain, "MX", mx), DnsRecord(f"*.{domain}", "MX", mx)]


@hookimpl
def postern_message_sent(postern, message, result):
    """Put the agent's sent message in the mailbox's Sent folder, so a human reading
    over IMAP sees both sides of every thread."""
    if not _active(postern):
        return
    from postern.plugins.wildduck.sent import append_sent

    append_sent(postern, message)
