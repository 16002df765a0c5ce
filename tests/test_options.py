"""``parse_options`` (postern.core.options): the one parser of every backend's options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from postern.core.options import OptionError, at_least, option, parse_options


@dataclass(frozen=True)
class Example:
    url: str = option(help='where it is, e.g. "http://x"')
    token: str = option("", secret=True)
    seconds: float = option(1.5, check=at_least(1))
    names: tuple[str, ...] = option(("a",))
    table: Mapping[str, str] = option({})
    flag: bool = option(False)

    def __post_init__(self):
        if self.flag and not self.token:
            raise ValueError("flag needs token")


def parse(**raw):
    return parse_options(Example, raw, "send.example")


def test_types_as_toml_gives_them_become_the_fields_types():
    parsed = parse(url="http://x", seconds=2, names=["b", "c"], table={"k": "v"})
    assert parsed == Example(url="http://x", seconds=2.0, names=("b", "c"), table={"k": "v"})
    assert isinstance(parsed.seconds, float) and parsed.names == ("b", "c")
    assert parse(url="u").names == ("a",) and parse(url="u").table == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, 'url is required: where it is, e.g. "http://x"'),
        ({"url": "u", "nope": 1}, "unknown option 'nope'; known: url, token, seconds, names, table, flag"),
        ({"url": "u", "seconds": "2"}, "'seconds' must be a number, got a string (\"2\")"),
        ({"url": "u", "seconds": 0.5}, "seconds must be at least 1"),
        ({"url": "u", "names": "a"}, "'names' must be an array of strings, got a string (\"a\")"),
        ({"url": "u", "names": ["a", 1]}, "'names' must be an array of strings, one is an integer (1)"),
        ({"url": "u", "table": {"k": 2}}, "'table.k' must be a string, got an integer (2)"),
        ({"url": "u", "flag": 1}, "'flag' must be true or false, got an integer (1)"),
        ({"url": "u", "flag": True}, "flag needs token"),
    ],
)
def test_every_problem_names_the_table(raw, message):
    with pytest.raises(OptionError) as refused:
        parse(**raw)
    assert str(refused.value) == f"[send.example]: {message}"


def test_a_secret_is_never_quoted():
    with pytest.raises(OptionError) as refused:
        parse(url="u", token=12345)
    assert str(refused.value) == "[send.example]: 'token' must be a string, got an integer"
    assert "hunter2" not in repr(parse(url="u", token="hunter2"))
