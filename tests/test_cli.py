"""The click CLI, in process through click's runner, as a user types it."""

import json

import pytest
from click.testing import CliRunner

import postern
from postern.cli import cli, main
from postern.core import migrations


@pytest.fixture
def run(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)

    return invoke


def test_version(run):
    result = run("version")
    assert result.exit_code == 0 and result.output == f"postern {postern.__version__}\n"


def test_plugins_lists_builtins_and_roles(run):
    result = run("plugins")
    assert result.exit_code == 0
    assert "billing_free" in result.output and "postern_register_backends" in result.output
    assert "billing  free" in result.output and "active (from billing_free)" in result.output
    assert "send     smtp_local" in result.output
    assert "dns      dns_builtin  default    active (from dns_builtin)" in result.output


def test_plugins_json(run):
    data = json.loads(run("plugins", "--json").output)
    roles = {r["role"]: r for r in data["roles"]}
    assert roles["billing"] == {
        "role": "billing",
        "backend": "free",
        "configured": False,
        "available": True,
        "plugin": "billing_free",
        "description": "no metering: every action is allowed",
        "choices": ["free", "metered", "x402"],
        "error": None,
    }
    assert roles["dns"]["available"] is True and roles["dns"]["choices"] == ["dns_builtin"]
    assert [p["name"] for p in data["plugins"]] == [
        "acs",
        "billing_free",
        "billing_metered",
        "billing_x402",
        "core",
        "dns_builtin",
        "mcp_http",
        "smtp_local",
        "wildduck",
    ]
    assert roles["receive"]["available"] is True and roles["receive"]["plugin"] == "smtp_local"
    assert roles["receive"]["choices"] == ["smtp_local", "wildduck"]
    assert roles["send"]["available"] is True and roles["send"]["plugin"] == "smtp_local"


def test_plugins_describes_each_backend(run, monkeypatch):
    """Backend.description: under the active backend of each role, and in --json for the
    role and for every installed backend, active or not."""
    from postern.plugins.wildduck.receiver import WildDuckReceiver

    lines = run("plugins").output.splitlines()
    at = lines.index("  billing  free         default    active (from billing_free)")
    assert lines[at + 1] == "           no metering: every action is allowed"
    at = lines.index("  receive  smtp_local   default    active (from smtp_local)")
    assert lines[at + 1] == "           SMTP listener (aiosmtpd); inboxes stored in Postern's database"

    data = json.loads(run("plugins", "--json").output)
    assert all(row["description"] for row in data["roles"])
    backends = {(b["role"], b["name"]): b for b in data["backends"]}
    assert backends["receive", "wildduck"] == {
        "role": "receive",
        "name": "wildduck",
        "plugin": "wildduck",
        "description": WildDuckReceiver.description,
    }
    assert WildDuckReceiver.description and all(b["description"] for b in data["backends"])
    assert {role for role, _ in backends} == {"send", "receive", "dns", "billing"}

    monkeypatch.setenv("POSTERN_DNS_BACKEND", "nosuch")  # no backend, so no description
    roles = {r["role"]: r for r in json.loads(run("plugins", "--json").stdout)["roles"]}
    assert roles["dns"]["available"] is False and roles["dns"]["description"] is None


def test_init_writes_config_and_database(run, tmp_path, monkeypatch):
    monkeypatch.delenv("POSTERN_DATA_DIR")
    monkeypatch.delenv("POSTERN_DATABASE_URL")
    target = tmp_path / "site"
    result = run("init", str(target))
    assert result.exit_code == 0, result.output
    assert (target / "postern.toml").read_text().startswith("# Postern configuration.")
    assert (target / "postern-data" / "postern.db").is_file()
    assert f"schema version {migrations.latest_version()}" in result.output
    again = CliRunner().invoke(cli, ["init", str(target)], obj={})
    assert again.exit_code == 1 and "exists; use --force" in again.output
    assert run("init", "--force", str(target)).exit_code == 0


def test_db_upgrade(run):
    first = run("db", "upgrade")
    assert first.exit_code == 0 and "applied m0001_initial" in first.output
    second = run("db", "upgrade")
    assert "applied" not in second.output and f"schema at version {migrations.latest_version()}" in second.output


def test_config_error_is_one_clean_line(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nworkers = 'x'\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "plugins"], obj={})
    assert result.exit_code == 1
    assert result.output == "Error: server.workers: expected an integer, got str 'x'\n"


def test_unknown_backend_refused_by_serve(run, monkeypatch):
    monkeypatch.setenv("POSTERN_RECEIVE_BACKEND", "mailcow")
    result = CliRunner().invoke(cli, ["serve"], obj={})
    assert result.exit_code == 1
    assert "receive backend 'mailcow' is not available (plugin not installed?)" in result.output
    assert "choose one of: smtp_local, wildduck" in result.output


def test_plugin_commands_are_added(run, monkeypatch, capsys):
    monkeypatch.setenv("POSTERN_PLUGINS_MODULES", "support.demo_plugin")
    monkeypatch.setattr("sys.argv", ["postern", "demo-hello"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out == "hello from the demo plugin\n"


def test_service_list_and_unknown_service(run, monkeypatch):
    monkeypatch.setenv("POSTERN_PLUGINS_MODULES", "support.demo_plugin")
    assert run("service", "list").output.startswith("demo-sleeper\t")
    result = CliRunner().invoke(cli, ["service", "run", "nope"], obj={})
    assert result.exit_code == 1 and "no service named 'nope'; services: demo-sleeper" in result.output


def test_admin_commands_end_to_end(run):
    customer = json.loads(run("admin", "customer", "create", "--label", "Acme", "--name", "Acme Inc", "--json").output)
    assert customer["label"] == "acme" and customer["domain"] == "acme.agents.localhost"
    assert [c["id"] for c in json.loads(run("admin", "customer", "list", "--json").output)] == [customer["id"]]

    token = json.loads(run("admin", "token", "create", "--customer", "acme", "--json").output)
    assert token["admin_token"].startswith("pk_admin_") and token["customer_id"] == customer["id"]

    created = run(
        "admin",
        "enroll-key",
        "create",
        "--customer",
        "acme",
        "--scopes",
        "mailbox:read,mailbox:create",
        "--max-mailboxes",
        "4",
        "--expires-in",
        "12h",
        "--max-redemptions",
        "3",
        "--json",
    )
    key = json.loads(created.output)
    assert key["enrollment_key"].startswith("pk_enroll_") and key["max_mailboxes"] == 4
    assert key["scopes"] == ["mailbox:create", "mailbox:read"] and key["max_redemptions"] == 3
    listed = json.loads(run("admin", "enroll-key", "list", "--json").output)
    assert [k["id"] for k in listed] == [key["id"]] and "enrollment_key" not in listed[0]

    revoked = json.loads(run("admin", "enroll-key", "revoke", key["id"], "--revoke-agent-keys", "--json").output)
    assert revoked == {"id": key["id"], "revoked": True, "agent_keys_revoked": 0}

    events = json.loads(run("admin", "audit", "--json").output)
    assert [e["action"] for e in events] == [
        "enrollment_key.revoke",
        "enrollment_key.create",
        "admin_token.create",
        "customer.create",
    ]
    assert {e["actor"] for e in events} == {"cli"}
    assert key["enrollment_key"] not in run("admin", "audit").output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "admin",
                "enroll-key",
                "create",
                "--customer",
                "nobody",
                "--scopes",
                "mailbox:read",
                "--max-mailboxes",
                "1",
            ],
            "no customer 'nobody'",
        ),
        (
            ["admin", "enroll-key", "create", "--customer", "acme", "--scopes", "mail:all", "--max-mailboxes", "1"],
            "unknown scope(s) mail:all",
        ),
        (
            [
                "admin",
                "enroll-key",
                "create",
                "--customer",
                "acme",
                "--scopes",
                "mailbox:read",
                "--max-mailboxes",
                "1",
                "--expires-in",
                "soon",
            ],
            "'soon' is not a duration",
        ),
        (["admin", "customer", "create", "--label", "-bad-"], "is not a DNS label"),
        (["admin", "agent-key", "revoke", "key_nope"], "no agent key 'key_nope'"),
    ],
)
def test_admin_command_errors_are_one_line(run, args, message):
    run("admin", "customer", "create", "--label", "acme")
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("label", ["ns1", "NS2", "mail"])
def test_labels_of_postern_own_hosts_are_refused(run, label):
    result = CliRunner().invoke(cli, ["admin", "customer", "create", "--label", label], obj={})
    assert result.exit_code != 0 and "names one of Postern's own hosts" in result.output


def test_duplicate_customer_label_is_refused(run):
    run("admin", "customer", "create", "--label", "acme")
    result = CliRunner().invoke(cli, ["admin", "customer", "create", "--label", "ACME"], obj={})
    assert result.exit_code == 1 and "a customer with label 'acme' exists" in result.output
