"""``POSTERN_*`` environment variables: config overrides, and refusing the misspelt.

Names (README "Configuration"):

- ``POSTERN_DATA_DIR`` and ``POSTERN_<SECTION>_<KEY>`` (``POSTERN_SERVER_WORKERS``) set
  ``data_dir`` and any key of the ``[server]``, ``[database]``… tables.
- ``POSTERN_<ROLE>_BACKEND`` chooses a role's backend.
- ``POSTERN_<ROLE>_<BACKEND>_<OPTION>`` sets one option of a ``[<role>.<backend>]``
  table (``POSTERN_RECEIVE_SMTP_LOCAL_BIND``). Backend names may hold underscores
  (``smtp_local``), so the name is found by matching the start of ``<BACKEND>_<OPTION>``
  against the backends installed for that role (and the tables the file has): it must
  match exactly one, or start-up stops calling the variable ambiguous. That needs the
  plugins, so these are kept aside by ``load_config`` and applied by ``build_postern``.
  The value is read as a TOML value when it is one (``2``, ``true``,
  ``["192.0.2.1"]``, ``"quoted"``), else taken as a plain string (``127.0.0.1:2525``).
- Reserved names (``RESERVED``) and any variable the loaded config names as a secret
  (``{ env = "POSTERN_ACS_CONNECTION_STRING" }``) are not overrides.

Any other ``POSTERN_*`` variable stops start-up naming it, with the nearest known name.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from postern.core.backends import ROLES
from postern.core.errors import ConfigError

ENV_PREFIX = "POSTERN_"

#: ``POSTERN_*`` variables that are not config overrides, and who reads them.
RESERVED = {
    "POSTERN_CONFIG": "the config file to load (the CLI)",
    "POSTERN_API_KEY": "the Python SDK and `postern mcp`: the agent's key",
    "POSTERN_API_BASE_URL": "the Python SDK and `postern mcp`: the server to call",
    "POSTERN_ENROLLMENT_KEY": "the Python SDK and `postern mcp`: the enrollment key agent keys are renewed from",
    "POSTERN_AGENT_HANDLE": "the Python SDK and `postern mcp`: the agent's handle under that enrollment key",
    "POSTERN_MCP_URL": "the MCP client example in docs/mcp.md: the MCP endpoint it connects to",
    "POSTERN_MOCK": "the Python SDK and `postern mcp`: offline mock mode",
    "POSTERN_TEST_DATABASE_URL": "the test suite: PostgreSQL to test against",
    "POSTERN_FUZZ_CASES": "the test suite: fuzzing length",
    "POSTERN_TEST_KEY_TTL": "the test suite: agent key TTL of tests/test_key_renewal.py",
    "POSTERN_TEST_RENEWAL_SECONDS": "the test suite: how long tests/test_key_renewal.py runs",
    "POSTERN_FUZZ_EXAMPLES": "the test suite: fuzzing length",
    "POSTERN_BENCH_RESULTS": "the benchmarks: where results go",
    "POSTERN_DEMO_PIDFILE": "the test suite's demo plugin",
    "POSTERN_SUPERVISOR_FD": "set by `postern serve` for its services: where a service says it serves",
    "POSTERN_RESTART_SEED": "the test suite: replays one listener-restart run",
}


@dataclass(frozen=True)
class BackendOption:
    """A ``POSTERN_<ROLE>_<BACKEND>_<OPTION>`` variable waiting for the backend names."""

    variable: str
    role: str
    rest: str  # "<backend>_<option>", lower case
    value: Any


def apply_environment(raw: dict[str, Any], environ: Mapping[str, str], sections: Mapping[str, Iterable[str]]) -> list:
    """Overlay the overrides onto ``raw`` (the parsed file); return the backend options
    for ``apply_backend_options``. ``sections`` maps each section to its keys."""
    secrets = set(_secret_names(raw))
    keys = {name: set(fields) for name, fields in sections.items()}
    pending: list[BackendOption] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if rest == "data_dir":
            raw["data_dir"] = value
        elif key in keys.get(section, ()) or (section in ROLES and key == "backend"):
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"'{section}' must be a table")
            table[key] = value
        elif name in RESERVED or name in secrets:
            continue
        elif section in ROLES and "_" in key:
            pending.append(BackendOption(name, section, key, _toml_value(value)))
        else:
            raise ConfigError(_unknown(name, keys))
    return pending


def apply_backend_options(config, registry) -> dict[str, str]:
    """Put each pending backend option into its ``[<role>.<backend>]`` table; return
    the variables that name no backend, or more than one, by role."""
    problems: dict[str, str] = {}
    for item in config.env_backend_options:
        role = config.role(item.role)
        names = set(registry.names(item.role)) | set(role.options)
        matches = sorted(n for n in names if item.rest.startswith(n + "_") and len(item.rest) > len(n) + 1)
        if len(matches) == 1:
            backend = matches[0]
            role.options.setdefault(backend, {})[item.rest[len(backend) + 1 :]] = item.value
            continue
        if matches:
            readings = " or ".join(f"[{item.role}.{n}] {item.rest[len(n) + 1 :]}" for n in matches)
            message = f"{item.variable} is ambiguous: it could set {readings}; set it in the config file instead"
        else:
            message = (
                f"{item.variable} names no {item.role} backend (POSTERN_{item.role.upper()}_<BACKEND>_<OPTION>; "
                f"{item.role} backends: {', '.join(sorted(names)) or 'none installed'})"
                + _did_you_mean(_backend_guess(item, names))
            )
        problems.setdefault(item.role, message)
    return problems


def known_variables(sections: Mapping[str, Iterable[str]]) -> list[str]:
    """Every ``POSTERN_*`` name start-up accepts, but for backend options and secrets."""
    names = [f"{ENV_PREFIX}DATA_DIR", *RESERVED]
    names += [f"{ENV_PREFIX}{section}_{key}".upper() for section, fields in sections.items() for key in fields]
    names += [f"{ENV_PREFIX}{role.upper()}_BACKEND" for role in ROLES]
    return names


def _unknown(name: str, sections: Mapping[str, Iterable[str]]) -> str:
    return (
        f"unknown environment variable {name}: not a config key (POSTERN_<SECTION>_<KEY>, "
        f"POSTERN_<ROLE>_BACKEND, POSTERN_<ROLE>_<BACKEND>_<OPTION>), a secret the config names, "
        f"nor a reserved name" + _did_you_mean(_closest(name, known_variables(sections)))
    )


def _closest(name: str, candidates: list[str]) -> list[str]:
    # Compared without the shared prefix, which would make every pair look alike.
    tails = {c[len(ENV_PREFIX) :]: c for c in candidates}
    found = difflib.get_close_matches(name[len(ENV_PREFIX) :], list(tails), n=1, cutoff=0.75)
    return [tails[f] for f in found]


def _backend_guess(item: BackendOption, names: set[str]) -> list[str]:
    """``POSTERN_RECEIVE_SMTP_LOCL_BIND`` -> ``POSTERN_RECEIVE_SMTP_LOCAL_BIND``."""
    parts = item.rest.split("_")
    for cut in range(1, len(parts)):
        found = difflib.get_close_matches("_".join(parts[:cut]), sorted(names), n=1, cutoff=0.75)
        if found:
            return [f"{ENV_PREFIX}{item.role}_{found[0]}_{'_'.join(parts[cut:])}".upper()]
    return []


def _did_you_mean(found: list[str]) -> str:
    return f"; did you mean {found[0]}?" if found else ""


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _secret_names(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            yield value["env"]
            return
        for item in value.values():
            yield from _secret_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_names(item)
