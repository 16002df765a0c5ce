"""``webhooks``: the dispatcher service that sends queued webhook deliveries."""

from postern.core.hookspecs import hookimpl
from postern.core.services import Service


def run(postern) -> None:
    from postern.core.webhooks.service import run_dispatcher

    run_dispatcher(postern)


@hookimpl
def postern_services(postern):
    return [Service("webhooks", run, "sends signed webhook deliveries, with retries")]
