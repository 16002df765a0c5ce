"""Backend options: a frozen dataclass per backend, filled from its config table.

A backend declares its options once, as a dataclass whose fields use ``option(...)``,
and names it in ``Backend.options_class``; ``parse_options`` then does what every
backend used to write by hand: refuse unknown keys, check each value's type as TOML
gives it (an array becomes a tuple), fill defaults, and run each field's ``check``.
Checks that span fields go in the dataclass's ``__post_init__``. Every problem is an
``OptionError`` naming the ``[role.name]`` table and the option, and never quoting the
value of an option marked ``secret``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from postern.core.errors import ConfigError

T = TypeVar("T")

#: How a type is named in an error, as a TOML user would say it.
_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class OptionError(ConfigError, ValueError):
    """A backend's config table is wrong; the message names the table and the option.
    A ``ConfigError`` (the error tree's setup branch) and, as the backend contract asks of
    ``from_config``, a ``ValueError``."""

    def __init__(self, section: str, message: str, *, key: str | None = None):
        super().__init__(f"[{section}]: {message}")
        self.section, self.key, self.problem = section, key, message


def option(
    default: Any = dataclasses.MISSING,
    *,
    check: Callable[[Any], Any] | None = None,
    help: str = "",  # noqa: A002 (the word an option's reader looks for)
    secret: bool = False,
) -> Any:
    """A field of an options dataclass. ``check(value)`` returns the value to keep (it
    may normalise it) or raises ``ValueError("must be …")``, reported as "<key> must be
    …". ``help`` says what the option is for (shown when a required one is missing);
    a ``secret`` value is left out of errors and of the dataclass's repr."""
    metadata = {"check": check, "help": help, "secret": secret}
    if isinstance(default, list | tuple):
        return dataclasses.field(default=tuple(default), metadata=metadata, repr=not secret)
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def parse_options(cls: type[T], raw: Mapping[str, Any], section: str) -> T:
    """``raw`` (a ``[section]`` table of the config) as an instance of the dataclass ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise OptionError(section, f"unknown option '{key}'; known: {', '.join(fields)}", key=key)
    values = {}
    for key, f in fields.items():
        if key not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                help_ = f.metadata.get("help")
                raise OptionError(section, f"{key} is required" + (f": {help_}" if help_ else ""), key=key)
            continue
        secret = f.metadata.get("secret", False)
        value = _typed(section, key, hints[key], raw[key], secret)
        check = f.metadata.get("check")
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                raise OptionError(section, f"{key} {exc}", key=key) from None
        values[key] = value
    try:
        return cls(**values)
    except OptionError:
        raise
    except ValueError as exc:  # a check across fields, in __post_init__
        raise OptionError(section, str(exc)) from None


def _typed(section: str, key: str, hint: Any, value: Any, secret: bool) -> Any:
    """``value`` as the field's type wants it, or an ``OptionError`` saying what it is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:  # tuple[X, ...]: a TOML array of X
        kind = f"an array of {_plural(args[0])}"
        if isinstance(value, list | tuple):
            items = []
            for item in value:
                try:
                    items.append(_typed(section, key, args[0], item, secret))
                except OptionError:
                    raise OptionError(
                        section, f"'{key}' must be {kind}, one is {_describe(item, secret)}", key=key
                    ) from None
            return tuple(items)
    elif origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        if isinstance(value, dict):
            item = args[1] if args else Any
            return {k: _typed(section, f"{key}.{k}", item, v, secret) for k, v in value.items()}
        kind = "a table"
    elif hint is Any:
        return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        kind = _KIND_NAMES[float]
    elif isinstance(hint, type):
        if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
            return value
        kind = _KIND_NAMES.get(hint, f"a {hint.__name__}")
    else:  # pragma: no cover (a type this parser does not know is the backend author's bug)
        raise TypeError(f"{section}.{key}: unsupported option type {hint!r}")
    raise OptionError(section, f"'{key}' must be {kind}, got {_describe(value, secret)}", key=key)


def _plural(kind: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(kind, "values")


def _describe(value: Any, secret: bool) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        kind = "an integer" if isinstance(value, int) else "a number"
        return kind if secret else f"{kind} ({value})"
    if isinstance(value, str):
        return "a string" if secret else f'a string ("{value[:40]}")'
    return {list: "an array", tuple: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def positive(value: float) -> float:
    """A ``check``: above zero."""
    if not value > 0:
        raise ValueError("must be positive")
    return value


def at_least(low: float) -> Callable[[float], float]:
    """A ``check``: ``low`` or more."""

    def check(value: float) -> float:
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value

    return check


def between(low: float, high: float, unit: str = "") -> Callable[[float], float]:
    """A ``check``: from ``low`` to ``high``, both included."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}{' ' + unit if unit else ''}")
        return value

    return check


def one_of(*choices: str) -> Callable[[str], str]:
    """A ``check``: one of ``choices``."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got '{value}'")
        return value

    return check


def host_port(value: str, *, empty: str = "") -> str:
    """A ``check``: ``host:port`` (``[v6]:port`` too) with a port from 1 to 65535."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port{empty}, got '{value}'")
    return value


def host_port_or_empty(value: str) -> str:
    """A ``check``: ``host:port``, or "" for none."""
    return value and host_port(value, empty=' (or "" for none)')
