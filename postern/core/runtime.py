"""``Postern``: what one process knows: config, plugins, backends. Hooks receive it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pluggy

from postern.core import migrations
from postern.core.backends import ROLES, Backend
from postern.core.config import Config
from postern.core.db import open_database
from postern.core.envconfig import apply_backend_options
from postern.core.errors import BackendUnavailable, ConfigError
from postern.core.options import OptionError
from postern.core.plugins import disabled_registrations, get_plugin_manager
from postern.core.registry import BackendRegistry, UnknownBackendError
from postern.core.services import Service


@dataclass(frozen=True)
class RoleStatus:
    role: str
    backend: str
    explicit: bool
    available: bool
    plugin: str | None


class Postern:
    """The running system as one process sees it."""

    def __init__(self, config: Config, pm: pluggy.PluginManager, registry: BackendRegistry):
        self.config = config
        self.pm = pm
        self.hook = pm.hook
        self.registry = registry
        self._backends: dict[str, Backend] = {}
        #: (role, backend) -> plugin, for the plugins ``[plugins] disabled`` names; read once, when needed.
        self._disabled: dict[tuple[str, str], str] | None = None
        #: POSTERN_<ROLE>_<BACKEND>_<OPTION> variables naming no backend, by role.
        self._env_problems = apply_backend_options(config, registry)

    @functools.cached_property
    def limiter(self):
        """The rate limiter of ``[limits]`` (docs/limits.md), or None when limits are off:
        one per process, shared by the API's requests, sends and the SMTP listener."""
        from postern.core.ratelimits import build_limiter

        return build_limiter(self.config.limits, self.config.database_url)

    def role_status(self) -> list[RoleStatus]:
        rows = []
        for role in ROLES:
            rc = self.config.role(role)
            available = self.registry.has(role, rc.backend)
            plugin = self.registry.get(role, rc.backend).plugin if available else None
            rows.append(RoleStatus(role, rc.backend, rc.explicit, available, plugin))
        return rows

    def validate_backends(self) -> None:
        """Refuse an explicitly configured backend that is not installed, and build
        every available one so bad options fail at start, not on first use."""
        for status in self.role_status():
            self._check_role(status)

    def backend_problems(self) -> dict[str, str]:
        """Why each role's backend cannot be used, by role (none: an empty dict); what
        ``validate_backends`` would refuse, for reports that must go on regardless."""
        problems = {}
        for status in self.role_status():
            try:
                self._check_role(status)
            except (ConfigError, UnknownBackendError) as exc:
                problems[status.role] = str(exc)
        return problems

    def _check_role(self, status: RoleStatus) -> None:
        if status.role in self._env_problems:
            raise ConfigError(self._env_problems[status.role])
        if not status.available and self.config.plugins.disabled:
            self._check_not_disabled(status)
        if status.explicit and not status.available:
            raise UnknownBackendError(status.role, status.backend, self.registry.names(status.role))
        if status.available:
            try:
                self.backend(status.role)
            except OptionError:  # a ConfigError naming the table already
                raise
            except ValueError as exc:
                raise ConfigError(f"[{status.role}.{status.backend}]: {exc}") from exc
            if status.role == "send":
                self._check_lease(status.backend)

    def _check_not_disabled(self, status: RoleStatus) -> None:
        """A role's backend (chosen or the default) whose plugin ``[plugins] disabled``
        names would leave the role without one: say so rather than run half a Postern."""
        if self._disabled is None:
            self._disabled = disabled_registrations(self.config.plugins.disabled, self.config.plugins.modules)
        plugin = self._disabled.get((status.role, status.backend))
        if plugin is not None:
            origin = "configured" if status.explicit else "the default"
            raise ConfigError(
                f"[plugins] disabled names '{plugin}', which provides the {status.role} backend "
                f"'{status.backend}' ({origin}) this configuration uses: enable the plugin again "
                f"or choose another [{status.role}] backend"
            )

    def _check_lease(self, name: str) -> None:
        deadline = getattr(self.backend("send"), "attempt_deadline", None)
        lease = self.config.mail.outbound_lease_seconds
        if deadline is not None and lease <= deadline:
            raise ConfigError(
                f"mail.outbound_lease_seconds ({lease}) must be above the longest attempt of the send "
                f"backend '{name}' ({deadline:g} s): the outbox would start a second attempt while the first "
                "still talks to the relay"
            )

    def backend(self, role: str) -> Any:
        """The configured backend for ``role``, built once per process."""
        if role not in self._backends:
            rc = self.config.role(role)
            if not self.registry.has(role, rc.backend):
                if rc.explicit:
                    raise UnknownBackendError(role, rc.backend, self.registry.names(role))
                raise BackendUnavailable(
                    f"no {role} backend: the default '{rc.backend}' is not installed and [{role}] backend is not set"
                )
            factory = self.registry.get(role, rc.backend).factory
            self._backends[role] = factory.from_config(rc.options_for(rc.backend))
        return self._backends[role]

    def active(self, role: str) -> Any | None:
        """The backend that serves ``role`` (built once), or None when the role has none:
        its default is not installed and config chose none. The core calls a backend's
        optional methods (``services``, ``dns_records``, ...) only on this one."""
        try:
            return self.backend(role)
        except BackendUnavailable:
            return None

    def active_backends(self) -> list[Backend]:
        """The active backend of every role that has one, in ``ROLES`` order."""
        return [backend for role in ROLES if (backend := self.active(role)) is not None]

    def services(self) -> list[Service]:
        """Every plugin's ``postern_services`` (the core's own outbox and webhook
        dispatcher among them), then the active backends': what ``postern serve`` runs."""
        batches = self.hook.postern_services(postern=self)
        batches += [backend.services(self) for backend in self.active_backends()]
        found: dict[str, Service] = {}
        for batch in batches:
            for service in batch or ():
                if service.name in found:
                    raise ValueError(f"two plugins declare a service named '{service.name}'")
                found[service.name] = service
        return list(found.values())


def build_postern(config: Config, *, open_db: bool = True, validate: bool = True) -> Postern:
    """Load plugins and backends for ``config``; open the database if asked. With
    ``validate=False`` a backend with bad options is left for ``backend_problems``."""
    pm = get_plugin_manager(disabled=config.plugins.disabled, modules=config.plugins.modules)
    registry = BackendRegistry.from_plugin_manager(pm)
    postern = Postern(config, pm, registry)
    if validate:
        postern.validate_backends()
    if open_db:
        open_database(config.database_url, config.database.sqlite_synchronous)
    return postern


def prepare_database(config: Config) -> int:
    """Make the data directory private, open the database and make sure its schema is
    current (or refuse)."""
    from postern.core.db import database
    from postern.core.filemodes import tighten_data_dir

    tighten_data_dir(config)
    open_database(config.database_url, config.database.sqlite_synchronous)
    with database.connection_context():
        return migrations.check(auto_upgrade=config.database.auto_migrate)
