"""The plugin manager factory: built-ins, then the ``postern`` entry-point group.

No manager exists at import time: ``get_plugin_manager()`` builds one, and tests
build their own. Built-in plugins are also declared in the entry-point group, as a
third-party plugin would be; registering them first by that same name makes pluggy
skip the duplicate when the entry points load, and keeps a source checkout working.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable

import pluggy

from postern.core import hookspecs
from postern.core.errors import SetupError

PROJECT = "postern"
log = logging.getLogger("postern.plugins")

log = logging.getLogger("postern.plugins")

#: (entry-point name, module) of the plugins that ship with Postern.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("billing_free", "postern.plugins.billing_free"),
    ("billing_metered", "postern.plugins.billing_metered"),
    ("billing_x402", "postern.plugins.billing_x402"),
    ("smtp_local", "postern.plugins.smtp_local"),
    ("dns_builtin", "postern.plugins.dns_builtin"),
    ("acs", "postern.plugins.acs"),
    ("wildduck", "postern.plugins.wildduck"),
    ("mcp_http", "postern.plugins.mcp_http"),
)


#: Registered by the core itself, before and whatever ``[plugins] disabled`` says: the
#: outbox and the webhook dispatcher (postern/core/coreservices.py).
CORE_PLUGIN = ("core", "postern.core.coreservices")


class PluginError(SetupError):
    """A plugin could not be loaded or implements a hook wrongly."""


class PosternPluginManager(pluggy.PluginManager):
    """Treats every ``postern_*`` function as a hook implementation, marked or not,
    so a misspelt hook name fails ``check_pending()`` instead of being ignored."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(f"{PROJECT}_"):
            if inspect.isroutine(getattr(plugin, name, None)):
                return {}
        return opts


def get_plugin_manager(
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
    load_entrypoints: bool = True,
) -> pluggy.PluginManager:
    """Build a manager with the built-ins, ``modules`` and installed plugins.

    ``disabled`` names plugins (entry-point or module names) that must not load.
    ``modules`` are extra plugin modules given by import path in config.
    """
    pm = PosternPluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = list(disabled)
    core_name, core_module = CORE_PLUGIN
    core = importlib.import_module(core_module)
    _refuse_disabling_core(disabled, core)
    pm.register(core, name=core_name)
    for name in disabled:
        pm.set_blocked(name)
    try:
        for name, module in DEFAULT_PLUGINS:
            if not pm.is_blocked(name):
                pm.register(importlib.import_module(module), name=name)
        for module in modules:
            if not pm.is_blocked(module):
                pm.register(_import_plugin(module), name=module)
        if load_entrypoints:
            pm.load_setuptools_entrypoints(PROJECT)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        # A hook implementation whose name or arguments match no spec.
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
    return pm


def _refuse_disabling_core(disabled: list[str], core) -> None:
    """The outbox and the webhook dispatcher were plugins once: naming them in
    ``[plugins] disabled`` would now disable nothing, and saying nothing would leave an
    operator believing they were off."""
    names = {CORE_PLUGIN[0], CORE_PLUGIN[1]} | {service.name for service in core.CORE_SERVICES}
    for name in disabled:
        if name in names or name.removeprefix("postern.plugins.") in names:
            raise PluginError(
                f"[plugins] disabled: '{name}' is a core service of Postern, not a plugin, and cannot be disabled"
            )


def disabled_registrations(disabled: Iterable[str], modules: Iterable[str] = ()) -> dict[tuple[str, str], str]:
    """(role, backend name) -> plugin, for the backends the ``disabled`` plugins would
    register: what start-up needs to say "you disabled the plugin of the backend this
    config uses" rather than "not installed". A disabled plugin that cannot even be
    loaded is left out (it may be disabled for that very reason)."""
    from importlib.metadata import entry_points

    wanted = set(disabled)
    loaders = [(name, lambda m=module: importlib.import_module(m)) for name, module in DEFAULT_PLUGINS]
    loaders += [(module, lambda m=module: importlib.import_module(m)) for module in modules]
    loaders += [(ep.name, ep.load) for ep in entry_points(group=PROJECT)]
    found: dict[tuple[str, str], str] = {}
    for name, load in loaders:
        if name in wanted:
            for role, backend in _backends_of(name, load):
                found.setdefault((role, backend), name)
    return found


def _backends_of(name: str, load) -> list[tuple[str, str]]:
    registered: list[tuple[str, str]] = []
    try:
        register = getattr(load(), f"{PROJECT}_register_backends", None)
        if callable(register):
            register(register=lambda role, backend, factory: registered.append((role, backend)))
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot tell", never a crash
        log.debug("disabled plugin %s: cannot list its backends: %s", name, exc)
    return registered


def _import_plugin(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(f"plugins.modules: cannot import '{module}': {exc}") from exc


def plugin_summaries(pm: pluggy.PluginManager) -> list[dict]:
    """Name, module and implemented hooks of every registered plugin."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0] or ""):
        if plugin is None:  # a blocked name
            continue
        dist = dists.get(id(plugin))
        rows.append(
            {
                "name": name,
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "version": dist.version if dist is not None else None,
                "hooks": sorted(impl.name for impl in pm.get_hookcallers(plugin) or ()),
            }
        )
    return rows


def notify(postern, hook_name: str, **kwargs) -> None:
    """Tell every plugin about an event that has already happened and is committed
    (``postern_message_received``, ``_sent``, ``_failed``); ``postern`` is passed too.

    Each plugin's implementation runs on its own, in pluggy's order: one that raises is
    logged (hook, plugin and message id; never the arguments, which carry mail and
    results) and the next still runs. Never raises: the event happened whatever a plugin
    thinks, and an exception here would answer a committed send or an accepted message
    with an error, inviting a duplicate."""
    kwargs["postern"] = postern
    message_id = getattr(kwargs.get("message"), "id", None)
    # Pluggy runs the last registered implementation first; so do we.
    for impl in reversed(getattr(postern.hook, hook_name).get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            log.error("plugin %s: a wrapper on the event hook %s is not called", impl.plugin_name, hook_name)
            continue
        try:
            impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception:
            log.exception("a %s hook failed in plugin %s for message %s", hook_name, impl.plugin_name, message_id)
