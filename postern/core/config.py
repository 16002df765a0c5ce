"""Settings: ``postern.toml`` + ``POSTERN_*`` environment overrides (``envconfig``).

Every key is typed and known: an unknown key or ``POSTERN_*`` variable, a wrong type,
an unknown backend name or a missing secret stops start-up with a message naming it.
Secrets are given as ``{ env = "NAME" }`` and resolved at load, so the file holds none.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from postern.core.backends import ROLES

# The sections are importable from here, where they always were.
from postern.core.configsections import (  # noqa: F401
    CHOICES,
    DEFAULT_BACKENDS,
    DEFAULT_CONFIG_NAME,
    DEFAULT_DATA_DIR,
    RESERVED_LOCAL_PARTS,
    SECTIONS,
    AuthConfig,
    Config,
    DatabaseConfig,
    LogConfig,
    MailConfig,
    McpConfig,
    PluginsConfig,
    RoleConfig,
    Secret,
    ServerConfig,
    TrustConfig,
    WebhooksConfig,
)
from postern.core.errors import ConfigError


def find_config_file(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to use: ``path``, else ``$POSTERN_CONFIG``, else ./postern.toml if present."""
    environ = os.environ if environ is None else environ
    if path:
        return Path(path)
    if environ.get("POSTERN_CONFIG"):
        return Path(environ["POSTERN_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment, resolve secrets and validate."""
    environ = os.environ if environ is None else environ
    source = find_config_file(path, environ)
    raw: dict[str, Any] = {}
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    from postern.core.envconfig import apply_environment

    fields = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
    backend_options = apply_environment(raw, environ, fields)
    raw = _resolve_secrets(raw, environ, "")
    config = _build(raw)
    config.env_backend_options = backend_options
    if source is not None:
        config.source = source.resolve()
        # A relative data_dir in a file means "next to this file", whatever the cwd.
        config.data_dir = config.source.parent / config.data_dir
    config.data_dir = config.data_dir.absolute()
    return config


def config_from_mapping(raw: Mapping[str, Any]) -> Config:
    """A config from a dict shaped like the TOML file, with no file and no environment
    (mock mode and embedded uses); validated as strictly as a file."""
    config = _build(_resolve_secrets(dict(raw), {}, ""))
    config.data_dir = config.data_dir.absolute()
    return config


def _build(raw: dict[str, Any]) -> Config:
    config = Config()
    for key, value in raw.items():
        if key == "data_dir":
            config.data_dir = Path(_coerce("data_dir", value, str))
        elif key in SECTIONS:
            setattr(config, key, _build_section(key, value, SECTIONS[key]))
        elif key in ROLES:
            continue
        else:
            raise ConfigError(f"unknown config key '{key}'; known: {', '.join(['data_dir', *SECTIONS, *ROLES])}")
    for role in ROLES:
        config.roles[role] = _build_role(role, raw.get(role, {}))
    return config


def _build_section(name: str, value: Any, cls: type) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"'{name}' must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, item in value.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{name}.{key}'; known: {', '.join(sorted(known))}")
        kwargs[key] = _coerce(f"{name}.{key}", item, hints[key])
        choices = CHOICES.get((name, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"{name}.{key}: '{kwargs[key]}' is not one of {', '.join(choices)}")
    section = cls(**kwargs)
    if name == "server" and section.workers < 1:
        raise ConfigError("server.workers must be at least 1")
    if name == "server" and not 1 <= section.restart_backoff_max <= 3600:
        raise ConfigError("server.restart_backoff_max must be from 1 to 3600 seconds")
    if name == "server" and not (1 <= section.header_timeout <= 3600 and 0 <= section.keepalive <= 3600):
        raise ConfigError("server.header_timeout must be from 1 and server.keepalive from 0, to 3600 seconds")
    if name == "server" and (section.max_connections < 1 or section.max_connections_per_client < 0):
        raise ConfigError("server.max_connections must be at least 1, max_connections_per_client at least 0")
    if name == "server":
        section.public_url = _public_url("server.public_url", section.public_url)
        section.trusted_proxies = _networks("server.trusted_proxies", section.trusted_proxies)
    if name == "log" and (section.max_bytes < 1024 or not 0 <= section.backup_count <= 1000):
        raise ConfigError("log.max_bytes must be at least 1024 and log.backup_count from 0 to 1000")
    if name == "mail" and not 5 <= section.outbound_lease_seconds <= 86400:
        raise ConfigError("mail.outbound_lease_seconds must be from 5 to 86400")
    if name == "mail" and not 1 <= section.outbox_threads <= 64:
        raise ConfigError("mail.outbox_threads must be from 1 to 64")
    if name == "mail" and not 1 <= section.approval_expiry_hours <= 8760:
        raise ConfigError("mail.approval_expiry_hours must be from 1 to 8760 (a year)")
    if name == "database" and not 0 <= section.threads <= 256:
        raise ConfigError("database.threads must be from 0 (pick for the database) to 256")
    if name == "auth" and section.agent_key_ttl_seconds < 60:
        raise ConfigError("auth.agent_key_ttl_seconds must be at least 60")
    if name == "auth" and not 5 <= section.download_link_ttl_seconds <= 86400:
        raise ConfigError("auth.download_link_ttl_seconds must be from 5 to 86400")
    if name == "webhooks":
        _check_webhooks(section)
    if name == "mcp":
        split_host_port("mcp.bind", section.bind)
        if section.api_base_url and not section.api_base_url.startswith(("http://", "https://")):
            raise ConfigError("mcp.api_base_url must start with http:// or https://")
    if name == "console" and not (
        1 <= section.idle_minutes <= 1440 and 1 <= section.absolute_hours <= 720 and 1 <= section.link_minutes <= 1440
    ):
        raise ConfigError("console: idle_minutes 1-1440, absolute_hours 1-720 and link_minutes 1-1440")
    if name == "audit" and not 0 <= section.keep_days <= 36500:
        raise ConfigError("audit.keep_days must be from 0 (keep forever) to 36500")
    if name == "console" and section.max_failed_logins < 1:
        raise ConfigError("console.max_failed_logins must be at least 1")
    if name == "metrics" and section.token and (len(section.token) < 16 or any(c.isspace() for c in section.token)):
        raise ConfigError("metrics.token must be at least 16 characters, without spaces (or empty: loopback only)")
    if name == "limits":
        from postern.core.ratelimits.policy import check_rates

        check_rates(section)
    if name == "mail":
        section.domain = _validate_domain("mail.domain", section.domain)
        section.reserved_local_parts = _local_parts("mail.reserved_local_parts", section.reserved_local_parts)
    return section


def split_host_port(key: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair, or a ``ConfigError`` naming ``key``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: '{value}' is not host:port")
    return host.strip("[]"), int(port)


def api_base_url(config: Config) -> str:
    """Where this server's own REST API answers, for clients running beside it."""
    if config.mcp.api_base_url:
        return config.mcp.api_base_url.rstrip("/")
    host, port = split_host_port("server.bind", config.server.bind)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  (reach a wildcard bind on loopback)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_webhooks(section: WebhooksConfig) -> None:
    import ipaddress

    for cidr in section.allow_destinations:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"webhooks.allow_destinations: '{cidr}' is not an IP network (e.g. 127.0.0.0/8)"
            ) from None
    if not 1 <= section.timeout_seconds <= 60:
        raise ConfigError("webhooks.timeout_seconds must be from 1 to 60")
    if not 0 < len(section.retry_schedule) <= 20 or not all(0 <= s <= 7 * 86400 for s in section.retry_schedule):
        raise ConfigError("webhooks.retry_schedule: 1 to 20 delays, each from 0 to 604800 seconds")
    if section.disable_after_failed_deliveries < 1 or section.concurrency < 1 or section.max_body_chars < 0:
        raise ConfigError("webhooks: disable_after_failed_deliveries and concurrency must be positive")
    section.public_url = _public_url("webhooks.public_url", section.public_url)


def _networks(key: str, values: list[str]) -> list[str]:
    """CIDR ranges (a bare address is its /32 or /128), normalised: ``10.0.0.1/8`` is
    refused rather than silently read as ``10.0.0.0/8``."""
    import ipaddress

    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip())))
        except ValueError:
            raise ConfigError(f"{key}: '{value}' is not an IP network (e.g. 127.0.0.1/32 or 10.0.0.0/8)") from None
    return networks


def _local_parts(key: str, values: list[str]) -> list[str]:
    from postern.core.names import InvalidName, normalise_local_part

    try:
        return sorted({normalise_local_part(value) for value in values})
    except InvalidName as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _public_url(key: str, value: str) -> str:
    """An absolute http(s) base URL without a trailing slash, or empty."""
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must start with http:// or https://")
    return value.rstrip("/")


def _build_role(role: str, value: Any) -> RoleConfig:
    if not isinstance(value, dict):
        raise ConfigError(f"'{role}' must be a table")
    options: dict[str, dict[str, Any]] = {}
    backend = None
    for key, item in value.items():
        if key == "backend":
            backend = _coerce(f"{role}.backend", item, str)
        elif isinstance(item, dict):
            options[key] = item
        else:
            raise ConfigError(
                f"unknown config key '{role}.{key}'; "
                f"'{role}' takes 'backend' and one table per backend, e.g. [{role}.NAME]"
            )
    if backend is None:
        return RoleConfig(DEFAULT_BACKENDS[role], options, explicit=False)
    return RoleConfig(backend, options, explicit=True)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list and typing.get_args(kind) == (int,):
        if isinstance(value, str):  # from the environment: comma-separated
            value = [_coerce(key, part.strip(), int) for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{key}: expected a list of integers, got {_describe(value)}")
        return value
    if origin is list:
        if isinstance(value, str):  # from the environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {_describe(value)}")
        return value
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if kind is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {kind}")  # a programming error in a section class


def _validate_domain(key: str, value: str) -> str:
    from postern.core.names import InvalidName, normalise_domain

    try:
        return normalise_domain(value)
    except InvalidName as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, Secret) else "a secret"


def _resolve_secrets(value: Any, environ: Mapping[str, str], key: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            env_name = value["env"]
            if env_name not in environ:
                raise ConfigError(f"{key}: secret environment variable {env_name} is not set")
            return Secret(environ[env_name])
        return {k: _resolve_secrets(v, environ, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, environ, key) for v in value]
    return value
