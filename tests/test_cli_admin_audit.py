"""``postern admin audit --customer``: a label or an id, like every other --customer."""

import json

import pytest
from click.testing import CliRunner

from postern.cli import cli


@pytest.fixture
def run(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), obj={})

    return invoke


def test_audit_filters_by_customer_label_or_id(run):
    acme = json.loads(run("admin", "customer", "create", "--label", "acme", "--json").stdout)
    other = json.loads(run("admin", "customer", "create", "--label", "other", "--json").stdout)
    run("admin", "token", "create", "--customer", "other")
    by_label = run("admin", "audit", "--customer", "acme", "--json")  # the README's own example
    assert by_label.exit_code == 0, by_label.stderr
    events = json.loads(by_label.stdout)
    assert [(e["action"], e["customer_id"]) for e in events] == [("customer.create", acme["id"])]
    assert json.loads(run("admin", "audit", "--customer", acme["id"], "--json").stdout) == events
    text = run("admin", "audit", "--customer", "ACME").stdout
    assert "customer.create" in text and other["id"] not in text


@pytest.mark.parametrize("ref", ["nosuch", "cus_aaaaaaaaaaaaaaaaaaaaaaaaaa", "not a label!"])
def test_audit_of_an_unknown_customer_is_an_error(run, ref):
    run("admin", "customer", "create", "--label", "acme")
    result = run("admin", "audit", "--customer", ref)
    assert result.exit_code == 1 and result.stdout == ""
    # The first CLI open of the test's database may also log that it tightened the
    # file's mode (a warning of its own, once per process): the error is one line.
    lines = [line for line in result.stderr.splitlines() if "postern.filemodes" not in line]
    assert len(lines) == 1 and lines[0].startswith("Error: no customer ")
