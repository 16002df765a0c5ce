"""Logging: text or JSON lines, with every secret-shaped string redacted.

Redaction happens in a filter on the handlers, so a key that slips into a message,
an argument or a traceback is replaced before any handler writes it.
"""

from __future__ import annotations

import json
import logging
import re
import sys

# Postern keys and webhook secrets, and the value of any Authorization header.
SECRET_PATTERN = re.compile(
    r"(?:pk_(?:enroll|agent|admin)_[A-Za-z0-9]+|whsec_[A-Za-z0-9+/=]+|(?i:bearer)\s+[A-Za-z0-9._~+/=-]+)"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return SECRET_PATTERN.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Renders the record's message once, redacted, so no formatter sees a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and extras."""

    RESERVED = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self.RESERVED and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def make_handler(fmt: str, stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route the root logger (and so gunicorn's and plugins') through one handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(fmt))
    root.setLevel(level.upper())


def gunicorn_logconfig(level: str, fmt: str) -> dict:
    """gunicorn's ``logconfig_dict``: its error and access logs through our handler."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {"postern": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "postern",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
