"""Logs never carry a key, in text or JSON, in messages, arguments or tracebacks."""

import io
import json
import logging

import pytest

from postern.core.logs import make_handler, redact

KEYS = ["pk_agent_Zx81abcdEFGH1234", "pk_enroll_9Qw2zz", "pk_admin_AAAA1111", "whsec_c2VjcmV0a2V5PT0="]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_keys_are_redacted_everywhere(fmt):
    stream = io.StringIO()
    logger = logging.getLogger(f"postern.test.{fmt}")
    logger.addHandler(make_handler(fmt, stream))
    logger.propagate = False
    try:
        logger.warning("key in message %s", KEYS[0])
        logger.warning("key in args: %s and %s", KEYS[1], KEYS[2])
        logger.warning("header Authorization: Bearer %s", "opaque-token.value")
        try:
            raise ValueError(f"bad secret {KEYS[3]}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.handlers.clear()
    out = stream.getvalue()
    for key in KEYS + ["opaque-token.value"]:
        assert key not in out
    assert out.count("[redacted]") == 5
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert [entry["level"] for entry in lines] == ["warning"] * 3 + ["error"]
        assert "ValueError" in lines[-1]["exception"]


def test_redact_leaves_ordinary_text():
    assert redact("inbox pk created for agent bob") == "inbox pk created for agent bob"
