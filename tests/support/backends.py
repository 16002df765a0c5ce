"""Make a test's own backend class the active one of its role, as config would."""

from __future__ import annotations

from postern.core.config import RoleConfig
from postern.core.hookspecs import hookimpl
from postern.core.registry import BackendRegistry
from postern.core.runtime import Postern


def activate(postern: Postern, backend_cls, **options) -> Postern:
    """A Postern like ``postern`` (same config and plugins) whose ``backend_cls.role``
    is served by ``backend_cls``, registered by a plugin and chosen in config."""

    class Plugin:
        @hookimpl
        def postern_register_backends(self, register):
            register(backend_cls.role, backend_cls.name, backend_cls)

    postern.pm.register(Plugin())
    role = backend_cls.role
    postern.config.roles[role] = RoleConfig(backend_cls.name, {backend_cls.name: options}, explicit=True)
    chosen = Postern(postern.config, postern.pm, BackendRegistry.from_plugin_manager(postern.pm))
    chosen.validate_backends()
    return chosen
