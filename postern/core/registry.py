"""Role -> name -> backend class, filled by ``postern_register_backends``.

Config picks one backend per role by name. An unknown name is an error that names
the role, the name and the choices; which plugin answered first never matters.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.core.backends import BASE_CLASSES, ROLES, Backend
from postern.core.errors import SetupError


class RegistryError(SetupError):
    """A plugin registered something the registry cannot accept."""


class UnknownBackendError(SetupError, LookupError):
    """Config asked for a backend no installed plugin provides."""

    def __init__(self, role: str, name: str, choices: list[str]):
        self.role, self.name, self.choices = role, name, choices
        available = ", ".join(choices) if choices else "none installed"
        super().__init__(
            f"{role} backend '{name}' is not available (plugin not installed?); choose one of: {available}"
        )


@dataclass(frozen=True)
class Registration:
    role: str
    name: str
    factory: type[Backend]
    plugin: str


class BackendRegistry:
    """Backends by role and name, with the plugin that registered each."""

    def __init__(self) -> None:
        self._by_role: dict[str, dict[str, Registration]] = {role: {} for role in ROLES}
        self._current_plugin = "?"

    @classmethod
    def from_plugin_manager(cls, pm) -> BackendRegistry:
        registry = cls()
        # Call implementation by implementation so each registration records its plugin.
        for impl in pm.hook.postern_register_backends.get_hookimpls():
            registry._current_plugin = impl.plugin_name
            kwargs = {"register": registry.register}
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        registry._current_plugin = "?"
        return registry

    def register(self, role: str, name: str, factory: type[Backend]) -> None:
        """Record ``factory`` as backend ``name`` for ``role``."""
        if role not in self._by_role:
            raise RegistryError(
                f"plugin {self._current_plugin} registered unknown role '{role}'; roles: {', '.join(ROLES)}"
            )
        base = BASE_CLASSES[role]
        if not (isinstance(factory, type) and issubclass(factory, base)):
            raise RegistryError(f"{role} backend '{name}' from {self._current_plugin} must subclass {base.__name__}")
        existing = self._by_role[role].get(name)
        if existing is not None:
            raise RegistryError(
                f"{role} backend '{name}' registered twice: by {existing.plugin} and by {self._current_plugin}"
            )
        self._by_role[role][name] = Registration(role, name, factory, self._current_plugin)

    def names(self, role: str) -> list[str]:
        return sorted(self._by_role[role])

    def get(self, role: str, name: str) -> Registration:
        try:
            return self._by_role[role][name]
        except KeyError:
            raise UnknownBackendError(role, name, self.names(role)) from None

    def has(self, role: str, name: str) -> bool:
        return name in self._by_role[role]
