"""The [webhooks] config section: defaults, environment overrides, refusals."""

from pathlib import Path

import pytest

from postern.core.config import ConfigError, load_config

ROOT = Path(__file__).parent.parent


def test_defaults_match_the_example_file():
    example = load_config(ROOT / "postern.example.toml", environ={}).webhooks
    default = load_config(environ={}).webhooks
    assert example == default
    assert default.retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]  # 8 attempts, ~27.6 h
    assert default.allow_destinations == [] and default.timeout_seconds == 15


def test_environment_overrides_lists():
    env = {"POSTERN_WEBHOOKS_ALLOW_DESTINATIONS": "127.0.0.0/8, ::1/128", "POSTERN_WEBHOOKS_RETRY_SCHEDULE": "1,2"}
    config = load_config(environ=env).webhooks
    assert config.allow_destinations == ["127.0.0.0/8", "::1/128"] and config.retry_schedule == [1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ('allow_destinations = ["localhost"]', "webhooks.allow_destinations: 'localhost' is not an IP network"),
        ("timeout_seconds = 0", "webhooks.timeout_seconds must be from 1 to 60"),
        ("retry_schedule = []", "webhooks.retry_schedule: 1 to 20 delays"),
        ('retry_schedule = ["5"]', "webhooks.retry_schedule: expected a list of integers"),
        ("retry_schedule = [true]", "webhooks.retry_schedule: expected a list of integers"),
        ("retry_schedule = [-1]", "webhooks.retry_schedule: 1 to 20 delays"),
        ("concurrency = 0", "must be positive"),
        ('public_url = "postern.example.org"', "webhooks.public_url must start with http"),
        ("allow_private = true", "unknown config key 'webhooks.allow_private'"),
    ],
)
def test_bad_webhook_config_is_refused(tmp_path, text, message):
    path = tmp_path / "postern.toml"
    path.write_text(f"[webhooks]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert message in str(err.value)
