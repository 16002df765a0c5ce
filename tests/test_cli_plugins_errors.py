"""`postern plugins` lists what is installed and active even when a backend's options are
wrong, shows the error beside that backend, and exits 1."""

import json

import pytest
from click.testing import CliRunner

from postern.cli import cli


@pytest.fixture
def run(env, monkeypatch, tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(config_text, *args):
        path = tmp_path / "postern.toml"
        path.write_text(config_text)
        return CliRunner().invoke(cli, ["--config", str(path), "plugins", *args], obj={})

    return invoke


BAD = '[dns.dns_builtin]\nttl = "soon"\n[receive]\nbackend = "wildduck"\n'


def test_listing_shows_each_backend_error_beside_it(run):
    result = run(BAD)
    assert result.exit_code == 1
    assert "Installed plugins:" in result.stdout and "  smtp_local (postern.plugins.smtp_local)" in result.stdout
    lines = result.stdout.splitlines()
    assert "  send     smtp_local   default    active (from smtp_local)" in lines
    assert "  billing  free         default    active (from billing_free)" in lines
    refused = "CONFIG ERROR: [dns.dns_builtin]: 'ttl' must be an integer, got a string (\"soon\")"
    assert f"  dns      dns_builtin  default    {refused}" in lines
    assert any(
        line.startswith("  receive  wildduck     configured CONFIG ERROR: [receive.wildduck]: api_url is required")
        for line in lines
    )
    assert result.stderr == "Error: 2 backend(s) cannot start (receive, dns): `postern serve` would refuse to run\n"


def test_json_listing_carries_the_errors(run):
    result = run(BAD + '[send]\nbackend = "nosuch"\n', "--json")
    assert result.exit_code == 1
    roles = {r["role"]: r for r in json.loads(result.stdout)["roles"]}
    assert roles["send"]["error"].startswith("send backend 'nosuch' is not available")
    assert roles["receive"]["available"] and roles["receive"]["error"].startswith("[receive.wildduck]: api_url")
    assert roles["billing"]["error"] is None and roles["billing"]["plugin"] == "billing_free"


def test_good_config_exits_zero_with_no_errors(run):
    result = run("[dns.dns_builtin]\nttl = 600\n", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert all(r["error"] is None for r in json.loads(result.stdout)["roles"])


def test_a_misnamed_backend_option_variable_is_shown_beside_its_role(run, monkeypatch):
    monkeypatch.setenv("POSTERN_RECEIVE_SMTP_LOCL_BIND", "127.0.0.1:2599")
    result = run("")
    assert result.exit_code == 1 and "Installed plugins:" in result.stdout
    assert (
        "  receive  smtp_local   default    CONFIG ERROR: POSTERN_RECEIVE_SMTP_LOCL_BIND names no receive backend"
        in result.stdout
    )
    assert "  dns      dns_builtin  default    active (from dns_builtin)" in result.stdout


DISABLE_SMTP_LOCAL = '[plugins]\ndisabled = ["smtp_local"]\n'


def test_disabling_the_plugin_of_an_active_backend_is_shown_beside_each_role(run):
    result = run(DISABLE_SMTP_LOCAL)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    for role in ("send", "receive"):
        assert (
            f"  {role:8} smtp_local   default    CONFIG ERROR: [plugins] disabled names 'smtp_local', which provides "
            f"the {role} backend 'smtp_local' (the default) this configuration uses: enable the plugin again or "
            f"choose another [{role}] backend"
        ) in lines
    assert result.stderr == "Error: 2 backend(s) cannot start (send, receive): `postern serve` would refuse to run\n"


def test_serve_refuses_to_start_without_the_plugin_of_an_active_backend(env, monkeypatch, tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "postern.toml"
    path.write_text(DISABLE_SMTP_LOCAL)
    result = CliRunner().invoke(cli, ["--config", str(path), "serve"], obj={})
    assert result.exit_code == 1
    assert result.output.startswith("Error: [plugins] disabled names 'smtp_local', which provides the send backend")


def test_a_core_service_named_in_disabled_is_refused(run):
    result = run('[plugins]\ndisabled = ["webhooks"]\n')
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: [plugins] disabled: 'webhooks' is a core service of Postern, not a plugin, and cannot be disabled\n"
    )
    assert "  core (postern.core.coreservices): postern_services" in run("").stdout
