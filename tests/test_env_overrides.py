"""``POSTERN_*`` variables: every backend-table option can be set from the environment
(``POSTERN_<ROLE>_<BACKEND>_<OPTION>``), and a variable that is neither a config key, a
reserved name nor a secret the config names stops start-up naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postern.core.config import ConfigError, load_config
from postern.core.envconfig import RESERVED
from postern.core.runtime import build_postern

ROOT = Path(__file__).parent.parent

# A plugin with backend names that share a start with the built-ins: "smtp" beside
# "smtp_local" (receive), and "my_relay" (send), a name holding an underscore.
PLUGIN = """
from postern.core.backends import Receiver, Sender
from postern.core.hookspecs import hookimpl


class Opts:
    @classmethod
    def from_config(cls, options):
        backend = cls()
        backend.options = dict(options)
        return backend


class Smtp(Opts, Receiver):
    name = "smtp"


class MyRelay(Opts, Sender):
    name = "my_relay"


@hookimpl
def postern_register_backends(register):
    register("receive", "smtp", Smtp)
    register("send", "my_relay", MyRelay)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "envtest_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"POSTERN_PLUGINS_MODULES": "envtest_plugin"}


def build(tmp_path, environ, text=""):
    path = tmp_path / "postern.toml"
    path.write_text(text)
    return build_postern(load_config(path, environ={"POSTERN_DATA_DIR": str(tmp_path), **environ}), open_db=False)


# --- backend-table options from the environment ---


def test_backend_options_from_the_environment(tmp_path):
    p = build(
        tmp_path,
        {
            "POSTERN_RECEIVE_SMTP_LOCAL_BIND": "127.0.0.1:2599",  # not TOML: a plain string
            "POSTERN_RECEIVE_SMTP_LOCAL_PROCESSES": "2",  # TOML: an integer
            "POSTERN_DNS_DNS_BUILTIN_BIND": "127.0.0.1:5399",
            "POSTERN_DNS_DNS_BUILTIN_NS1_ADDRESSES": '["192.0.2.1", "192.0.2.2"]',
            "POSTERN_DNS_DNS_BUILTIN_DKIM_SELECTOR": '"2026"',  # quoted: stays a string
        },
        '[dns.dns_builtin]\nbind = "127.0.0.1:5300"\nttl = 900\n',
    )
    receiver, dns = p.backend("receive"), p.backend("dns")
    assert (receiver.options.bind, receiver.options.processes) == ("127.0.0.1:2599", 2)
    dns = dns.options
    assert dns.bind == "127.0.0.1:5399" and dns.ttl == 900  # the variable wins, the rest of the file stays
    assert dns.ns1_addresses == ("192.0.2.1", "192.0.2.2") and dns.dkim_selector == "2026"


def test_backend_names_with_underscores_match_the_installed_names(tmp_path, plugin):
    p = build(
        tmp_path,
        {**plugin, "POSTERN_SEND_BACKEND": "my_relay", "POSTERN_SEND_MY_RELAY_HOST_NAME": "relay.example.org"},
    )
    assert p.backend("send").options == {"host_name": "relay.example.org"}
    assert p.config.role("send").options_for("my") == {}


def test_a_variable_two_backend_names_could_claim_is_refused(tmp_path, plugin):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, {**plugin, "POSTERN_RECEIVE_SMTP_LOCAL_BIND": "127.0.0.1:2599"})
    assert str(err.value) == (
        "POSTERN_RECEIVE_SMTP_LOCAL_BIND is ambiguous: it could set [receive.smtp] local_bind or "
        "[receive.smtp_local] bind; set it in the config file instead"
    )


def test_a_table_in_the_file_names_a_backend_too(tmp_path):
    """A backend not installed here but given a table in the file can still be set."""
    config = load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), "POSTERN_SEND_POSTMARK_TOKEN": "x"})
    with pytest.raises(ConfigError, match="POSTERN_SEND_POSTMARK_TOKEN names no send backend"):
        build_postern(config, open_db=False)
    p = build(tmp_path, {"POSTERN_SEND_POSTMARK_TOKEN": "x"}, "[send.postmark]\nserver = 1\n")
    assert p.config.role("send").options_for("postmark") == {"server": 1, "token": "x"}


# --- unknown variables ---


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("POSTERN_SERVER_WORKRS", "POSTERN_SERVER_WORKERS"),
        ("POSTERN_DATABSE_URL", "POSTERN_DATABASE_URL"),
        ("POSTERN_SEND_BACKNED", "POSTERN_SEND_BACKEND"),
        ("POSTERN_DATADIR", "POSTERN_DATA_DIR"),
        ("POSTERN_MAIL_DOMIAN", "POSTERN_MAIL_DOMAIN"),
        ("POSTERN_NOTHING_LIKE_IT", None),
    ],
)
def test_unknown_variable_stops_start_up_naming_it(tmp_path, name, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), name: "4"})
    message = str(err.value)
    assert message.startswith(f"unknown environment variable {name}: ")
    assert (f"did you mean {suggestion}?" in message) if suggestion else "did you mean" not in message


def test_misspelt_backend_in_an_option_variable_stops_start_up(tmp_path):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, {"POSTERN_RECEIVE_SMTP_LOCL_BIND": "127.0.0.1:2599"})
    assert str(err.value) == (
        "POSTERN_RECEIVE_SMTP_LOCL_BIND names no receive backend (POSTERN_RECEIVE_<BACKEND>_<OPTION>; "
        "receive backends: smtp_local, wildduck); did you mean POSTERN_RECEIVE_SMTP_LOCAL_BIND?"
    )


def test_reserved_names_and_named_secrets_are_not_refused(tmp_path):
    text = (
        '[mail]\ndkim_key_secret = { env = "POSTERN_DKIM_KEY_SECRET" }\n'
        '[send.acs]\nconnection_string = { env = "POSTERN_ACS_CONNECTION_STRING" }\n'
    )
    environ = {name: "1" for name in RESERVED}
    environ |= {
        "POSTERN_DKIM_KEY_SECRET": "k" * 32,
        "POSTERN_ACS_CONNECTION_STRING": "endpoint=https://x;accesskey=eA==",
    }
    config = load_config(_write(tmp_path, text), environ=environ)
    assert config.mail.dkim_key_secret == "k" * 32
    with pytest.raises(ConfigError, match="unknown environment variable POSTERN_DKIM_KEY_SECRET"):
        load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), "POSTERN_DKIM_KEY_SECRET": "k"})


def _write(tmp_path, text):
    path = tmp_path / "secrets.toml"
    path.write_text(text)
    return path


def test_no_postern_variable_used_in_the_repository_is_refused(tmp_path):
    """Every POSTERN_* name the code, tests, benchmarks and docs use is a config key, a
    reserved name, or a secret written as { env = "NAME" } (known once a config names it)."""
    texts = [
        path.read_text(errors="replace")
        for pattern in ("postern/**/*.py", "tests/**/*.py", "bench/**/*.py", "docs/*.md", "README.md", "*.toml")
        for path in ROOT.glob(pattern)
        if path.name != Path(__file__).name  # this file's misspellings are meant
    ]
    # The docs show what a misspelt one is told: those examples are meant too.
    text = re.sub(r"unknown environment variable POSTERN_\w+", "", "\n".join(texts))
    secrets = set(re.findall(r'env\s*=\s*"(POSTERN_[A-Z0-9_]+)"', text))
    names = {n for n in re.findall(r"\bPOSTERN_[A-Z0-9_]*[A-Z0-9]\b", text)} - secrets
    assert {"POSTERN_ACS_CONNECTION_STRING", "POSTERN_DKIM_KEY_SECRET"} <= secrets
    assert {"POSTERN_TEST_DATABASE_URL", "POSTERN_API_KEY", "POSTERN_FUZZ_CASES"} <= names
    refused = []
    for name in sorted(names):
        try:
            load_config(environ={"POSTERN_DATA_DIR": str(tmp_path), name: "1"})
        except ConfigError as exc:
            if "unknown environment variable" in str(exc):
                refused.append(name)
    assert refused == []
