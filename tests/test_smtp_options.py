"""``ListenerOptions``, the SMTP listener's options object (postern.core.smtp.options), as
both receive backends that serve it read it from their config tables."""

from __future__ import annotations

import dataclasses

import pytest

from postern.core.config import ConfigError
from postern.core.options import OptionError, parse_options
from postern.core.runtime import build_postern
from postern.core.smtp.options import MAX_PROCESSES, ListenerOptions
from postern.plugins.smtp_local.receiver import SmtpLocalReceiver
from postern.plugins.wildduck.receiver import WildDuckReceiver

SECTION = "receive.smtp_local"


def test_defaults_and_given_values():
    assert parse_options(ListenerOptions, {}, SECTION) == ListenerOptions()
    parsed = parse_options(ListenerOptions, {"bind": "[::1]:2526", "processes": 3, "data_timeout": 30}, SECTION)
    assert (parsed.bind, parsed.processes, parsed.data_timeout, parsed.threads) == ("[::1]:2526", 3, 30, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.processes = 4  # one object, read by every listener process: never changed in place


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"colour": "red"}, "unknown option 'colour'; known: bind, hostname, max_recipients, threads, processes"),
        ({"processes": "2"}, "'processes' must be an integer, got a string (\"2\")"),
        ({"processes": True}, "'processes' must be an integer, got a boolean (true)"),
        ({"processes": 2.0}, "'processes' must be an integer, got a number (2.0)"),
        ({"processes": 0}, f"processes must be from 1 to {MAX_PROCESSES}"),
        ({"processes": MAX_PROCESSES + 1}, f"processes must be from 1 to {MAX_PROCESSES}"),
        ({"bind": "2525"}, "bind must be host:port, got '2525'"),
        ({"bind": "localhost:smtp"}, "bind must be host:port, got 'localhost:smtp'"),
        ({"bind": "localhost:70000"}, "bind must be host:port, got 'localhost:70000'"),
        ({"hostname": ["a"]}, "'hostname' must be a string, got an array"),
        ({"max_recipients": 0}, "max_recipients must be at least 1"),
        ({"command_timeout": 0}, "command_timeout must be at least 1"),
        ({"data_timeout": -5}, "data_timeout must be at least 1"),
        ({"max_connections_per_client": 0}, "max_connections_per_client must be at least 1"),
    ],
)
def test_bad_values_are_refused_naming_the_table_and_the_option(raw, message):
    with pytest.raises(OptionError) as refused:
        SmtpLocalReceiver.from_config(raw)
    assert str(refused.value).startswith(f"[{SECTION}]: {message}")
    assert refused.value.key == next(iter(raw))


def test_a_bad_value_stops_start_up_with_one_clear_line(config):
    config.roles["receive"].options = {"smtp_local": {"processes": 0}}
    with pytest.raises(ConfigError) as refused:
        build_postern(config, open_db=False)
    assert str(refused.value) == f"[receive.smtp_local]: processes must be from 1 to {MAX_PROCESSES}"


def test_wildduck_front_door_gets_the_same_listener_options():
    receiver = WildDuckReceiver.from_config(
        {"api_url": "http://127.0.0.1:1", "smtp_bind": "127.0.0.1:2600", "processes": 3, "max_recipients": 7}
    )
    listener = receiver.options.listener()
    assert isinstance(listener, ListenerOptions)
    assert (listener.bind, listener.processes, listener.max_recipients) == ("127.0.0.1:2600", 3, 7)
    with pytest.raises(OptionError, match=rf"^\[receive.wildduck\]: processes must be from 1 to {MAX_PROCESSES}$"):
        WildDuckReceiver.from_config({"api_url": "http://127.0.0.1:1", "processes": 0})
