"""Every hook a Postern plugin can implement.

Hooks are for what any plugin may add: backends, services, routes, commands, event
listeners, DNS records, quota refusals. What only the backend chosen for a role
should do (its services, its SPF, DKIM and DNS records, a look at each sent message)
is a method of its class in ``postern.core.backends``, which the core calls on the
active backend alone; no hook here needs an "am I the active one?" guard.

Hooks are called with keyword arguments, so an implementation may accept only the
arguments it needs; arguments may be added to a spec later, never removed.
docs/plugins.md documents each hook and a meta-test keeps the two in step.
"""

import pluggy

hookspec = pluggy.HookspecMarker("postern")
hookimpl = pluggy.HookimplMarker("postern")


@hookspec
def postern_register_backends(register):
    """Hand the core named backend classes, once at start-up.

    Call ``register(role, name, factory)`` for each backend the plugin provides;
    ``role`` is one of ``send``, ``receive``, ``dns``, ``billing`` and ``factory`` is a
    subclass of the role's base class in ``postern.core.backends``. Config picks one
    backend per role by name; registration never selects one. Returns nothing.
    """


@hookspec
def postern_services(postern):
    """Return long-running services for ``postern serve`` to supervise.

    Return a list of ``postern.core.services.Service``. Each runs in its own child
    process, is started after the API is ready, restarted with backoff when it
    exits, and stopped on SIGTERM. Results from all plugins are concatenated, after
    the core's own (``outbox``, ``webhooks``) and the active backends' ``services()``.
    """


@hookspec
def postern_routes(postern):
    """Return extra HTTP routes for the API as a list of ``postern.api.Route``.

    Resources follow falcon's ASGI conventions (``async def on_get(req, resp)``).
    Results from all plugins are concatenated.
    """


@hookspec
def postern_register_commands(cli):
    """Add commands to the ``postern`` click group ``cli``. Returns nothing."""


@hookspec
def postern_message_received(postern, message):
    """Inbound mail was committed to the store.

    ``message`` is the stored message record. Called after the transaction commits,
    so the message is readable. Return values are ignored; an exception is logged and
    the other plugins are still called (``postern.core.plugins.notify``).
    """


@hookspec
def postern_message_sent(postern, message, result):
    """The send backend accepted an outbound message.

    ``result`` is the backend's ``SendResult`` (None when every recipient was an inbox
    of this Postern). The active backends' ``message_sent`` runs first. Return values
    are ignored; an exception is logged and the other plugins are still called
    (``postern.core.plugins.notify``).
    """


@hookspec
def postern_message_failed(postern, message, error):
    """An outbound message failed for good.

    ``error`` is the ``PermanentFailure`` (or the last ``TemporaryFailure`` once
    retries ran out). Return values are ignored; an exception is logged and the other
    plugins are still called (``postern.core.plugins.notify``).
    """


@hookspec
def postern_dns_records(postern, domain):
    """Return extra DNS records for ``domain`` as a list of ``DnsRecord``.

    Called whenever the DNS backend (re)builds a zone: ``domain`` is the zone's apex
    (the base mail domain or a tenant domain); records must lie inside it. Use it
    for anything beyond the MX, SPF, DKIM and DMARC the core already publishes and
    the active backends' ``dns_records()``. Results from all plugins are concatenated.
    """


@hookspec
def postern_check_quota(postern, customer_id, action, quantity):
    """Say whether ``customer_id`` may perform ``action`` ``quantity`` times.

    Return a ``QuotaDecision`` or ``None`` for no opinion. Every plugin is asked and
    any refusal wins, so a plugin can add a limit but never lift another's.
    """
