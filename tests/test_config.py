"""Config: file + environment, typed keys, secrets, clear refusals."""

from pathlib import Path

import pytest

from postern.core.config import ConfigError, Secret, api_base_url, load_config


def write(tmp_path, text) -> Path:
    path = tmp_path / "postern.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_without_any_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.source is None
    assert config.data_dir == tmp_path / "postern-data"
    assert config.database_url == f"sqlite:///{tmp_path}/postern-data/postern.db"
    assert config.server.bind == "127.0.0.1:8800" and config.server.workers == 2
    assert {r: c.backend for r, c in config.roles.items()} == {
        "send": "smtp_local",
        "receive": "smtp_local",
        "dns": "dns_builtin",
        "billing": "free",
    }
    assert not any(c.explicit for c in config.roles.values())


def test_file_then_environment_overrides(tmp_path):
    path = write(tmp_path, 'data_dir = "d"\n[server]\nworkers = 3\nbind = "127.0.0.1:9000"\n[log]\nformat = "json"\n')
    config = load_config(path, environ={"POSTERN_SERVER_WORKERS": "5", "POSTERN_DATABASE_AUTO_MIGRATE": "false"})
    assert config.server.workers == 5 and config.server.bind == "127.0.0.1:9000"
    assert config.database.auto_migrate is False and config.log.format == "json"
    assert config.data_dir == tmp_path / "d"  # relative to the file, not the cwd
    assert config.source == path


def test_database_threads_pick_for_the_database_unless_set(tmp_path):
    assert load_config(environ={"POSTERN_DATA_DIR": str(tmp_path)}).database_threads == 2
    pg = {"POSTERN_DATABASE_URL": "postgresql://db/postern"}
    assert load_config(environ=pg).database_threads == 8
    assert load_config(environ={**pg, "POSTERN_DATABASE_THREADS": "3"}).database_threads == 3


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "[server]\nworkers = 4\n")
    assert load_config(environ={"POSTERN_CONFIG": str(path)}).server.workers == 4


def test_backend_choice_and_options(tmp_path):
    path = write(tmp_path, '[send]\nbackend = "acs"\n[send.acs]\nsender = "a@b.c"\n[send.other]\nx = 1\n')
    role = load_config(path, environ={}).role("send")
    assert role.backend == "acs" and role.explicit
    assert role.options_for("acs") == {"sender": "a@b.c"} and role.options_for("nope") == {}


def test_secrets_resolved_from_environment(tmp_path):
    path = write(tmp_path, '[send.acs]\nconnection_string = { env = "ACS_CS" }\n[database]\nurl = { env = "DBURL" }\n')
    config = load_config(path, environ={"ACS_CS": "endpoint=https://x;accesskey=c2VjcmV0", "DBURL": "sqlite:///x.db"})
    secret = config.role("send").options_for("acs")["connection_string"]
    assert isinstance(secret, Secret) and secret == "endpoint=https://x;accesskey=c2VjcmV0"
    assert "c2VjcmV0" not in repr(secret) and "c2VjcmV0" not in repr(config.role("send"))
    assert config.database_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    "text, env, message",
    [
        (
            '[send.acs]\nkey = { env = "MISSING_KEY" }\n',
            {},
            "send.acs.key: secret environment variable MISSING_KEY is not set",
        ),
        ("[server]\nworkres = 2\n", {}, "unknown config key 'server.workres'"),
        ("colour = 'blue'\n", {}, "unknown config key 'colour'"),
        ('[server]\nworkers = "two"\n', {}, "server.workers: expected an integer, got str 'two'"),
        ("[server]\nworkers = 0\n", {}, "server.workers must be at least 1"),
        ("[database]\nthreads = -1\n", {}, "database.threads must be from 0"),
        ("[database]\nauto_migrate = 1\n", {}, "database.auto_migrate: expected true or false"),
        ('[log]\nformat = "xml"\n', {}, "log.format: 'xml' is not one of text, json"),
        ('[plugins]\ndisabled = "x"\n', {}, None),  # a string is read as a comma list: allowed
        ("[plugins]\ndisabled = [1]\n", {}, "plugins.disabled: expected a list of strings"),
        ("[send]\nbackend = 3\n", {}, "send.backend: expected a string"),
        ('[send]\ncolour = "x"\n', {}, "unknown config key 'send.colour'"),
        ("server = 3\n", {}, "'server' must be a table"),
        ("[server\n", {}, "not valid TOML"),
        ("", {"POSTERN_SERVER_WORKERS": "many"}, "server.workers: expected an integer, got str 'many'"),
        ('[mcp]\nbind = "8810"\n', {}, "mcp.bind: '8810' is not host:port"),
        ('[mcp]\nbind = "localhost:99999"\n', {}, "mcp.bind: 'localhost:99999' is not host:port"),
        ('[mcp]\napi_base_url = "ftp://x"\n', {}, "mcp.api_base_url must start with http:// or https://"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, text, env, message):
    path = write(tmp_path, text)
    if message is None:
        load_config(path, environ=env)
        return
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    assert message in str(err.value)


def test_missing_config_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_unrelated_postern_variables_are_ignored(tmp_path):
    config = load_config(environ={"POSTERN_API_KEY": "pk_agent_x", "POSTERN_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path


def test_example_config_is_valid_and_shipped(tmp_path):
    root = Path(__file__).parent.parent
    example = root / "postern.example.toml"
    assert example.read_text() == (root / "postern" / "postern.example.toml").read_text()
    config = load_config(example, environ={})
    assert config.server.workers == 2 and not config.role("send").explicit


def test_mcp_reaches_this_servers_api_unless_told_otherwise(tmp_path):
    config = load_config(write(tmp_path, '[server]\nbind = "0.0.0.0:9000"\n[mcp]\nenabled = true\n'), environ={})
    assert config.mcp.enabled and config.mcp.bind == "127.0.0.1:8810"
    assert api_base_url(config) == "http://127.0.0.1:9000"  # a wildcard bind is reached on loopback
    config = load_config(write(tmp_path, '[mcp]\napi_base_url = "https://mail.example.org/"\n'), environ={})
    assert api_base_url(config) == "https://mail.example.org"
