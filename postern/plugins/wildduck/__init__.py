"""``wildduck``: WildDuck as the mailbox store behind Postern's inboxes.

Every inbox is a WildDuck user (REST API); inbound mail reaches WildDuck over LMTP,
from Postern's own SMTP listener or from an operator's MX; a watcher follows WildDuck
and feeds each new message through the core's ingest exactly once; sent messages are
appended to the mailbox's Sent folder. ``WildDuckReceiver`` declares its services,
DNS records and Sent-folder filing itself. docs/wildduck.md describes the setup.
"""

from postern.core.hookspecs import hookimpl
from postern.plugins.wildduck.receiver import WildDuckReceiver


@hookimpl
def postern_register_backends(register):
    register("receive", WildDuckReceiver.name, WildDuckReceiver)


@hookimpl
def postern_register_commands(cli):
    from postern.plugins.wildduck.commands import register

    register(cli)
