"""One error tree (postern/core/errors.py), converted in one place for the API and one
for the CLI: every error class Postern defines is under ``PosternError``; the API answers
each branch with its envelope, the CLI with one ``Error:`` line and exit status 1."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import postern
from postern.api.errors import ApiError
from postern.core import errors
from postern.core.errors import BackendError, PosternError, RequestError, SetupError

TESTS = Path(__file__).parent

# Exceptions that are no error Postern reports, each with why.
NOT_REPORTED = {
    # The MCP server is a client of the REST API: its errors are the client's.
    "postern.mcp.keys.NoKey",
    "postern.mcp.keys.AdminKeyRefused",
    "postern.mcp.keys.IncompleteCredential",
    # A private signal inside the WildDuck watcher's loop, never raised out of it.
    "postern.plugins.wildduck.watcher._AlreadyStored",
    # A spent DNS budget inside sender verification: it becomes a temperror verdict there.
    "postern.core.mail.verdicts.DnsTempError",
    # The console's signal that a request has no live session: it becomes the sign-in page.
    "postern.console.web.SignInNeeded",
    # A failed authentication held back for the rate limiter: deny() raises the real error.
    "postern.core.auth.PendingDenial",
    # A refused rate-limit charge inside the counters' transaction: it becomes a verdict.
    "postern.core.ratelimits.counters._Refused",
    # A report with more MIME parts than a report can have: parse_report answers None.
    "postern.core.mail.reports._TooManyParts",
    # One MX passed over in direct delivery (no TLS under MTA-STS, a refusal): the next is tried.
    "postern.plugins.smtp_local.direct._Skip",
}
# The client SDK ships alone (its own errors); postern.testing builds on it.
NOT_SERVER = ("postern.client", "postern.testing")

SETUP = [
    "postern.core.config.ConfigError",
    "postern.core.options.OptionError",
    "postern.core.plugins.PluginError",
    "postern.core.registry.RegistryError",
    "postern.core.registry.UnknownBackendError",
    "postern.core.db.DatabaseConfigError",
    "postern.core.migrations.SchemaError",
    "postern.core.dkim.DkimKeyUnavailable",
    "postern.core.webhooks.signing.SecretUnreadable",
]
BACKEND = [
    "postern.core.runtime.BackendUnavailable",
    "postern.core.backends.TemporaryFailure",
    "postern.core.backends.PermanentFailure",
    "postern.core.errors.Unavailable",
    "postern.core.domains.ResolverUnreachable",
    "postern.plugins.dns_builtin.store.ZoneUnavailable",
]
REQUEST = [
    "postern.core.errors.InvalidInput",
    "postern.core.errors.NotFound",
    "postern.core.errors.PermissionDenied",
    "postern.core.names.InvalidName",
    "postern.core.keys.MalformedKey",
    "postern.core.mail.links.LinkGone",
    "postern.core.mail.mime.MailRejected",
    "postern.core.webhooks.destinations.DestinationRefused",
    "postern.api.errors.ApiError",
]


def named(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def server_exception_classes() -> dict[str, type]:
    """Every exception class defined in a module of the server, by dotted name."""
    found = {}
    for info in pkgutil.walk_packages(postern.__path__, "postern."):
        if info.name.startswith(NOT_SERVER) or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_class_of_the_server_is_under_the_root():
    classes = server_exception_classes()
    assert {"postern.core.errors.SetupError", "postern.plugins.dns_builtin.store.ZoneUnavailable"} <= set(classes)
    outside = {name for name, cls in classes.items() if not issubclass(cls, PosternError)}
    assert outside == NOT_REPORTED


@pytest.mark.parametrize(
    "branch, members", [(SetupError, SETUP), (BackendError, BACKEND), (RequestError, REQUEST)], ids=str
)
def test_each_error_is_on_its_branch(branch, members):
    for path in members:
        assert issubclass(named(path), branch), path
    others = {SetupError, BackendError, RequestError} - {branch}
    assert not any(issubclass(named(path), other) for path in members for other in others)


def test_the_old_homes_hand_out_the_same_classes():
    """Plugins and callers that import them where they used to live get the tree's."""
    from postern.core import backends, config, runtime

    assert config.ConfigError is errors.ConfigError and runtime.BackendUnavailable is errors.BackendUnavailable
    assert backends.BackendError is errors.BackendError and backends.TemporaryFailure is errors.TemporaryFailure
    assert issubclass(errors.BackendUnavailable, LookupError)  # callers that caught LookupError still do


# --- the API: one handler, each branch ------------------------------------------------


@pytest.fixture
def config(config):
    config.plugins.modules = ["support.raising_plugin", "support.demo_plugin"]
    return config


def envelope(resp, status: int, code: str, kind: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert error["code"] == code and error["type"] == kind
    assert error["request_id"] == resp.headers["x-request-id"]
    return error


def test_api_answers_a_request_error_with_its_status_and_field(client):
    error = envelope(client.simulate_get("/v1/raise/not-found"), 404, "not_found", "not_found_error")
    assert error["message"] == "no inbox 'inb_missing'"
    error = envelope(client.simulate_get("/v1/raise/invalid"), 422, "invalid_field", "invalid_request_error")
    assert error["field"] == "limit"


def test_api_error_is_a_request_error_with_any_status(client):
    assert isinstance(ApiError(415, "unsupported_media_type", "x"), RequestError)
    resp = client.simulate_post("/v1/demo/echo", body="{}", headers={"Content-Type": "text/plain"})
    envelope(resp, 415, "unsupported_media_type", "invalid_request_error")


@pytest.mark.parametrize("kind", ["config", "plugin"])
def test_api_answers_a_setup_error_500_and_logs_the_cause(client, caplog, kind):
    with caplog.at_level(logging.ERROR, logger="postern.api"):
        resp = client.simulate_get(f"/v1/raise/{kind}")
    error = envelope(resp, 500, "setup_error", "api_error")
    assert "operator" in error["message"]
    # The caller is not told how the server is set up; the operator's log says it.
    assert "secret-setting-name" not in resp.text and "postern_routez" not in resp.text
    assert resp.headers["x-request-id"] in caplog.text
    assert ("secret-setting-name" if kind == "config" else "postern_routez") in caplog.text


def test_api_answers_a_backend_error_with_its_status_and_retry_after(client):
    resp = client.simulate_get("/v1/raise/temporary")
    error = envelope(resp, 503, "acme_busy", "unavailable_error")
    assert error["message"] == "acme answered 503" and resp.headers["retry-after"] == "7"
    envelope(client.simulate_get("/v1/raise/permanent"), 502, "acme_refused", "api_error")
    resp = client.simulate_get("/v1/raise/no-backend")
    envelope(resp, 503, "no_backend", "unavailable_error")
    assert "retry-after" not in resp.headers


# --- the CLI: one line, exit 1, no traceback -------------------------------------------

CLI_LINES = {
    "not-found": "Error: no inbox 'inb_missing'",
    "invalid": "Error: limit must be between 1 and 100",
    "config": "Error: [send.acme]: api_key is required (secret-setting-name)",
    "plugin": "Error: plugin 'acme' implements postern_routez, which is no hook",
    "temporary": "Error: acme answered 503",
    "permanent": "Error: acme refused the sender",
    "no-backend": "Error: no dns backend: the default 'dns_builtin' is not installed",
}


def postern_command(env, tmp_path, *args):
    """The real ``postern`` entry point in a child, with the raising plugin loaded."""
    child_env = {k: v for k, v in os.environ.items() if k != "POSTERN_CONFIG"}
    child_env |= env | {"POSTERN_PLUGINS_MODULES": "support.raising_plugin", "PYTHONPATH": str(TESTS)}
    argv = [sys.executable, "-m", "postern", *args]
    return subprocess.run(argv, env=child_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", sorted(CLI_LINES))
def test_cli_prints_one_line_and_exits_1(env, tmp_path, kind):
    done = postern_command(env, tmp_path, "raise-error", kind)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", CLI_LINES[kind] + "\n")


@pytest.mark.parametrize("kind", ["not-found", "config"])
def test_context_run_converts_errors_inside_the_database(env, tmp_path, kind):
    """``context.run`` opens (and migrates) the database first, then converts the same way."""
    done = postern_command(env, tmp_path, "raise-error", "--in-database", kind)
    assert (done.returncode, done.stderr) == (1, CLI_LINES[kind] + "\n")
    assert "Traceback" not in done.stdout + done.stderr
