"""The plugin manager, the registry, and one test per hook (see test_meta.py)."""

from __future__ import annotations

from importlib.metadata import entry_points

import click
import pytest
from click.testing import CliRunner

from postern.api import Route, build_routes
from postern.core.backends import (
    BillingBackend,
    DnsRecord,
    OutboundMessage,
    PermanentFailure,
    QuotaDecision,
    Sender,
    SendResult,
)
from postern.core.config import ConfigError, load_config
from postern.core.db import DatabaseRunner
from postern.core.hookspecs import hookimpl
from postern.core.plugins import DEFAULT_PLUGINS, PluginError, get_plugin_manager, notify, plugin_summaries
from postern.core.quota import check_quota
from postern.core.registry import BackendRegistry, RegistryError, UnknownBackendError
from postern.core.runtime import BackendUnavailable, Postern, build_postern
from postern.core.services import Service


class RecordingSender(Sender):
    """A send backend that records what it was asked and fails on request."""

    name = "recording"

    def __init__(self, fail: str = ""):
        self.sent = []
        self.fail = fail

    @classmethod
    def from_config(cls, options):
        unknown = set(options) - {"fail"}
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(fail=options.get("fail", ""))

    def send(self, message):
        if self.fail:
            raise PermanentFailure(self.fail, code="rejected")
        self.sent.append(message)
        return SendResult(self.name, f"rec-{len(self.sent)}", "sent")


class SenderPlugin:
    @hookimpl
    def postern_register_backends(self, register):
        register("send", RecordingSender.name, RecordingSender)


def make_postern(config, *extra_plugins) -> Postern:
    pm = get_plugin_manager(load_entrypoints=False)
    for plugin in extra_plugins:
        pm.register(plugin)
    registry = BackendRegistry.from_plugin_manager(pm)
    p = Postern(config, pm, registry)
    p.validate_backends()
    return p


# -- plugin manager --------------------------------------------------------------------


def test_builtins_are_declared_as_entry_points():
    declared = {ep.name: ep.value for ep in entry_points(group="postern")}
    for name, module in DEFAULT_PLUGINS:
        assert declared.get(name) == module


def test_builtins_load_once_with_entry_points():
    pm = get_plugin_manager()
    names = [name for name, plugin in pm.list_name_plugin() if plugin is not None]
    assert names.count("billing_free") == 1
    summary = {row["name"]: row for row in plugin_summaries(pm)}
    assert summary["billing_free"]["hooks"] == ["postern_register_backends"]


def test_tiny_plugin_registered_then_unregistered():
    # No built-in answers postern_dns_records (a backend's records come from its methods).
    pm = get_plugin_manager(load_entrypoints=False)
    calls = []

    class Tiny:
        @hookimpl
        def postern_dns_records(self, domain):
            calls.append(domain)
            return [DnsRecord(domain, "TXT", "hello")]

    tiny = Tiny()
    pm.register(tiny)
    try:
        assert pm.hook.postern_dns_records(postern=None, domain="a.example") == [
            [DnsRecord("a.example", "TXT", "hello")]
        ]
    finally:
        pm.unregister(tiny)
    assert pm.hook.postern_dns_records(postern=None, domain="b.example") == []
    assert calls == ["a.example"]


def test_disabled_plugin_is_not_called(config):
    pm = get_plugin_manager(disabled=["billing_free", "billing_metered", "billing_x402"])
    assert pm.get_plugin("billing_free") is None
    registry = BackendRegistry.from_plugin_manager(pm)
    assert registry.names("billing") == []
    p = Postern(config, pm, registry)
    with pytest.raises(BackendUnavailable):
        p.backend("billing")


def test_disabled_by_config_and_env(tmp_path):
    config = load_config(environ={"POSTERN_PLUGINS_DISABLED": "acs, other", "POSTERN_DATA_DIR": str(tmp_path)})
    assert config.plugins.disabled == ["acs", "other"]
    p = build_postern(config, open_db=False)
    assert p.pm.get_plugin("acs") is None and p.registry.names("send") == ["smtp_local"]


def test_disabling_the_plugin_of_a_backend_in_use_stops_start_up(tmp_path):
    config = load_config(environ={"POSTERN_PLUGINS_DISABLED": "billing_free", "POSTERN_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        build_postern(config, open_db=False)
    assert str(err.value) == (
        "[plugins] disabled names 'billing_free', which provides the billing backend 'free' (the default) this "
        "configuration uses: enable the plugin again or choose another [billing] backend"
    )
    env = {"POSTERN_PLUGINS_DISABLED": "acs", "POSTERN_SEND_BACKEND": "acs", "POSTERN_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="disabled names 'acs', which provides the send backend 'acs' .configured."):
        build_postern(load_config(environ=env), open_db=False)
    # Reports that go on regardless (`postern plugins`) show it beside the role.
    p = build_postern(load_config(environ=env), open_db=False, validate=False)
    assert p.backend_problems()["send"].startswith("[plugins] disabled names 'acs'")


@pytest.mark.parametrize("name", ["outbox", "webhooks", "postern.plugins.outbox", "core"])
def test_core_services_cannot_be_disabled(name):
    with pytest.raises(PluginError, match=f"'{name}' is a core service of Postern, not a plugin"):
        get_plugin_manager(disabled=[name], load_entrypoints=False)


def test_core_services_run_whatever_plugins_are_disabled(config):
    every = [name for name, _ in DEFAULT_PLUGINS]
    pm = get_plugin_manager(disabled=every, load_entrypoints=False)
    assert [name for name, plugin in pm.list_name_plugin() if plugin is not None] == ["core"]
    p = Postern(config, pm, BackendRegistry.from_plugin_manager(pm))
    assert p.active_backends() == [] and p.active("send") is None
    assert sorted(s.name for s in p.services()) == ["outbox", "webhooks"]


# -- the active backend's methods ------------------------------------------------------


class Spy:
    """Optional backend methods that record that the core called them."""

    calls: list = []

    def services(self, postern):
        self.calls.append((self.name, "services"))
        return [Service(f"{self.name}-svc", print)]

    def message_sent(self, postern, message, result):
        self.calls.append((self.name, "message_sent", message))


class SpySender(Spy, RecordingSender):
    name = "spy"


class OtherSpySender(Spy, RecordingSender):
    name = "other_spy"


class SpyPlugin:
    @hookimpl
    def postern_register_backends(self, register):
        register("send", SpySender.name, SpySender)
        register("send", OtherSpySender.name, OtherSpySender)


def test_only_the_active_backend_of_a_role_is_asked(config):
    Spy.calls = []
    config.roles["send"].backend, config.roles["send"].explicit = "spy", True
    p = make_postern(config, SpyPlugin())
    assert isinstance(p.active("send"), SpySender) and p.active("send") is p.backend("send")
    assert [b.role for b in p.active_backends()] == ["send", "receive", "dns", "billing"]
    names = [s.name for s in p.services()]
    assert "spy-svc" in names and "other_spy-svc" not in names
    assert {"outbox", "webhooks", "smtp", "dns"} <= set(names)
    from postern.core.mail.delivery import tell_sent

    tell_sent(p, "m1", None)
    assert Spy.calls == [("spy", "services"), ("spy", "message_sent", "m1")]


def test_backend_methods_default_to_nothing():
    sender = RecordingSender()
    assert sender.services(None) == [] and sender.dns_records(None, "a.example") == []
    assert sender.spf_mechanisms(None, "a.example") == [] and sender.dkim_records(None, "a.example") is None
    assert sender.dkim_sign(None, "a@a.example", b"raw") == b"raw"
    assert sender.message_sent(None, "m", None) is None


def test_misspelt_decorated_hookimpl_is_caught():
    class Misspelt:
        @hookimpl
        def postern_servics(self, postern):
            return []

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Misspelt())
    with pytest.raises(Exception, match="postern_servics"):
        pm.check_pending()


def test_misspelt_undecorated_hookimpl_is_caught(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text("def postern_rutes(postern):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="postern_rutes"):
        get_plugin_manager(modules=["typo_plugin"], load_entrypoints=False)


def test_unimportable_plugin_module_is_named():
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        get_plugin_manager(modules=["no_such_module_xyz"], load_entrypoints=False)


# -- registry ----------------------------------------------------------------------------


def test_unknown_backend_names_role_name_and_choices(config):
    p = make_postern(config, SenderPlugin())
    with pytest.raises(UnknownBackendError) as err:
        p.registry.get("send", "smtp_locl")
    assert str(err.value) == (
        "send backend 'smtp_locl' is not available (plugin not installed?); choose one of: acs, recording, smtp_local"
    )


def test_explicit_unknown_backend_refused_at_start(tmp_path):
    config = load_config(environ={"POSTERN_SEND_BACKEND": "nope", "POSTERN_DATA_DIR": str(tmp_path)})
    with pytest.raises(UnknownBackendError, match="send backend 'nope'.*choose one of: acs, smtp_local"):
        build_postern(config, open_db=False)


def test_default_backend_missing_is_reported_not_fatal(config):
    pm = get_plugin_manager(disabled=["dns_builtin"], load_entrypoints=False)
    p = Postern(config, pm, BackendRegistry.from_plugin_manager(pm))
    p.validate_backends()
    status = {s.role: s for s in p.role_status()}
    assert status["dns"].backend == "dns_builtin" and not status["dns"].available and not status["dns"].explicit
    assert status["billing"].available and status["billing"].plugin == "billing_free"
    assert status["send"].available and status["send"].plugin == "smtp_local"
    with pytest.raises(BackendUnavailable, match="default 'dns_builtin' is not installed"):
        p.backend("dns")


def test_backend_chosen_by_name_with_options(tmp_path):
    config = load_config(environ={"POSTERN_DATA_DIR": str(tmp_path)})
    config.roles["send"].backend, config.roles["send"].explicit = "recording", True
    config.roles["send"].options = {"recording": {"fail": "no thanks"}, "other": {"x": 1}}
    sender = make_postern(config, SenderPlugin()).backend("send")
    assert isinstance(sender, RecordingSender) and sender.fail == "no thanks"
    with pytest.raises(PermanentFailure) as err:
        sender.send(OutboundMessage("<m@x>", "a@x", ("b@y",), b""))
    assert err.value.code == "rejected"


def test_bad_backend_options_refused_at_start_naming_table(tmp_path):
    config = load_config(environ={"POSTERN_DATA_DIR": str(tmp_path)})
    config.roles["send"].backend, config.roles["send"].explicit = "recording", True
    config.roles["send"].options = {"recording": {"colour": "blue"}}
    with pytest.raises(ConfigError, match=r"\[send.recording\]: unknown option\(s\): colour"):
        make_postern(config, SenderPlugin())


def test_registry_refuses_duplicates_wrong_roles_and_classes():
    class Twice:
        @hookimpl
        def postern_register_backends(self, register):
            register("send", "recording", RecordingSender)

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(SenderPlugin(), name="first")
    pm.register(Twice(), name="second")
    with pytest.raises(RegistryError, match="registered twice"):
        BackendRegistry.from_plugin_manager(pm)
    registry = BackendRegistry()
    with pytest.raises(RegistryError, match="unknown role 'mail'"):
        registry.register("mail", "x", RecordingSender)
    with pytest.raises(RegistryError, match="must subclass BillingBackend"):
        registry.register("billing", "x", RecordingSender)


# -- one test per hook --------------------------------------------------------------------


def test_hook_postern_register_backends(config):
    p = make_postern(config, SenderPlugin())
    assert p.registry.names("send") == ["acs", "recording", "smtp_local"]
    assert p.registry.get("send", "recording").factory is RecordingSender
    assert p.registry.get("billing", "free").plugin == "billing_free"


def test_hook_postern_services(config):
    from support import demo_plugin

    p = make_postern(config, demo_plugin)
    assert sorted(s.name for s in p.services()) == ["demo-sleeper", "dns", "outbox", "smtp", "webhooks"]

    class Clash:
        @hookimpl
        def postern_services(self):
            return [demo_plugin.Service("demo-sleeper", print)]

    p.pm.register(Clash())
    with pytest.raises(ValueError, match="two plugins declare a service named 'demo-sleeper'"):
        p.services()


def test_hook_postern_routes(config):
    from support import demo_plugin

    p = make_postern(config, demo_plugin)
    routes = build_routes(p, DatabaseRunner(1))
    paths = [r.path for r in routes]
    assert "/v1/demo/echo" in paths and "/healthz" in paths and paths[-1] == "/v1/openapi.json"
    assert all(isinstance(r, Route) for r in routes)


def test_hook_postern_register_commands():
    from support import demo_plugin

    group = click.Group()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(demo_plugin)
    pm.hook.postern_register_commands(cli=group)
    result = CliRunner().invoke(group, ["demo-hello"])
    assert result.exit_code == 0 and result.output == "hello from the demo plugin\n"


class EventRecorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def postern_message_received(self, message):
        self.events.append(("received", message))

    @hookimpl
    def postern_message_sent(self, message, result):
        self.events.append(("sent", message, result))

    @hookimpl
    def postern_message_failed(self, message, error):
        self.events.append(("failed", message, error))


def test_hook_postern_message_received(config):
    recorder = EventRecorder()
    p = make_postern(config, recorder)
    p.hook.postern_message_received(postern=p, message="m1")
    assert recorder.events == [("received", "m1")]


def test_hook_postern_message_sent(config):
    recorder = EventRecorder()
    p = make_postern(config, recorder)
    result = SendResult("recording", "id-1", "sent")
    p.hook.postern_message_sent(postern=p, message="m2", result=result)
    assert recorder.events == [("sent", "m2", result)]


def test_hook_postern_message_failed(config):
    recorder = EventRecorder()
    p = make_postern(config, recorder)
    error = PermanentFailure("mailbox unavailable", code="550")
    p.hook.postern_message_failed(postern=p, message="m3", error=error)
    assert recorder.events == [("failed", "m3", error)]


class RaisingListener:
    """Raises on every event, with a secret-looking value in its message."""

    def __init__(self):
        self.calls = 0

    @hookimpl
    def postern_message_received(self, message):
        self.calls += 1
        raise RuntimeError("listener down")

    @hookimpl
    def postern_message_sent(self, message, result):
        self.calls += 1
        raise RuntimeError("listener down")


class Note:
    """A stand-in message: notify logs its id, never its content."""

    id = "msg_note"
    subject = "the secret subject"


def test_notify_runs_every_plugin_even_when_one_raises(config, caplog):
    recorder, raising = EventRecorder(), RaisingListener()
    # pluggy calls the last registered first: the raising plugin goes before the recorder.
    p = make_postern(config, recorder, raising)
    order = [impl.plugin for impl in reversed(p.hook.postern_message_received.get_hookimpls())]
    assert order.index(raising) < order.index(recorder)
    message, result = Note(), SendResult("recording", "id-1", "sent")
    with caplog.at_level("ERROR", logger="postern.plugins"):
        notify(p, "postern_message_received", message=message)
        notify(p, "postern_message_sent", message=message, result=result)
    assert raising.calls == 2
    assert recorder.events == [("received", message), ("sent", message, result)]
    failures = [r for r in caplog.records if r.name == "postern.plugins"]
    assert [r.getMessage() for r in failures] == [
        f"a postern_message_received hook failed in plugin {p.pm.get_name(raising)} for message msg_note",
        f"a postern_message_sent hook failed in plugin {p.pm.get_name(raising)} for message msg_note",
    ]
    assert "secret subject" not in caplog.text and "id-1" not in caplog.text


def test_notify_passes_only_the_arguments_an_implementation_takes(config):
    seen = []

    class Minimal:
        @hookimpl
        def postern_message_failed(self, error):
            seen.append(error)

    p = make_postern(config, Minimal())
    error = PermanentFailure("mailbox unavailable", code="550")
    notify(p, "postern_message_failed", message=Note(), error=error)
    assert seen == [error]


def test_hook_postern_dns_records(config):
    class Spf:
        @hookimpl
        def postern_dns_records(self, postern, domain):
            return [DnsRecord(domain, "TXT", "v=spf1 include:example.net -all")]

    class Nothing:
        @hookimpl
        def postern_dns_records(self, domain):
            return None

    p = make_postern(config, Spf(), Nothing())
    batches = [b for b in p.hook.postern_dns_records(postern=p, domain="acme.example") if b]
    assert batches == [[DnsRecord("acme.example", "TXT", "v=spf1 include:example.net -all")]]


def test_hook_postern_check_quota(config):
    class Cap:
        def __init__(self):
            self.asked = []

        @hookimpl
        def postern_check_quota(self, customer_id, action, quantity):
            self.asked.append((customer_id, action, quantity))
            if action == "message.send" and quantity > 10:
                return QuotaDecision(False, "at most 10 at once", retry_after=60)
            return None

    class Generous:
        @hookimpl
        def postern_check_quota(self):
            return QuotaDecision(True)

    cap = Cap()
    p = make_postern(config, cap, Generous())
    assert check_quota(p, "cus_1", "message.send", 3) == QuotaDecision(True)
    refused = check_quota(p, "cus_1", "message.send", 11)
    assert refused == QuotaDecision(False, "at most 10 at once", retry_after=60)
    assert cap.asked == [("cus_1", "message.send", 3), ("cus_1", "message.send", 11)]


def test_billing_refusal_wins_over_plugins(config):
    class Stingy(BillingBackend):
        name = "stingy"

        def check(self, customer_id, action, quantity=1):
            return QuotaDecision(False, "payment required")

    class Reg:
        @hookimpl
        def postern_register_backends(self, register):
            register("billing", "stingy", Stingy)

    class Allow:
        @hookimpl
        def postern_check_quota(self):
            return QuotaDecision(True)

    config.roles["billing"].backend, config.roles["billing"].explicit = "stingy", True
    p = make_postern(config, Reg(), Allow())
    assert check_quota(p, "cus_1", "inbox.create") == QuotaDecision(False, "payment required")


def test_free_billing_allows_everything(config):
    p = make_postern(config)
    assert check_quota(p, "cus_1", "message.send", 1000) == QuotaDecision(True)


def test_hookimpl_with_an_argument_the_spec_lacks_is_refused(tmp_path, monkeypatch):
    (tmp_path / "badargs_plugin.py").write_text("def postern_routes(postern, colour):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="colour"):
        get_plugin_manager(modules=["badargs_plugin"], load_entrypoints=False)


def test_loading_every_plugin_leaves_the_x402_sdk_unimported(tmp_path):
    """Every process loads every built-in plugin; the x402 backend's SDK (eth_account,
    web3: ~30 MiB per process, bench/README.md "Memory") is imported only when x402
    billing is chosen. Checked in a fresh interpreter, where nothing else imported it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from postern.core.config import load_config\n"
        "from postern.core.runtime import build_postern\n"
        f"build_postern(load_config(environ={{'POSTERN_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "print(sorted(m for m in ('eth_account', 'web3', 'x402') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_process_imports_what_its_command_runs_not_every_command(tmp_path):
    """Each service, the supervisor and the API master is a ``postern`` process of its
    own. One that runs the DNS service (or any but SMTP) loads every built-in plugin, but
    not the SMTP listener's ingest path, and no process loads the admin commands'
    modules unless it runs one (bench/README.md "Memory": ~30 MiB PSS over a server)."""
    import subprocess
    import sys

    heavy = ("postern.core.mail.ingest", "postern.core.smtp.listener", "postern.cli.admin", "postern.core.inboxes")
    probe = (
        "import sys\n"
        "from postern.cli.app import cli\n"
        "from postern.core.config import load_config\n"
        "from postern.core.runtime import build_postern\n"
        f"postern = build_postern(load_config(environ={{'POSTERN_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "cli.get_command(None, 'service')\n"
        "assert [s.name for s in postern.services()]\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "cli.get_command(None, 'admin')\n"
        "print('postern.cli.admin' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["[]", "True"], out.stdout + out.stderr
