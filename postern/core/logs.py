"""Logging: text or JSON lines, with every secret-shaped string redacted.

Redaction happens in a filter on the handlers, so a key that slips into a message,
an argument or a traceback is replaced before any handler writes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path

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
#: Under systemd the journal stamps each line itself, and reads a ``<N>`` prefix as the
#: line's syslog priority (sd-daemon(3)), so ``journalctl -p warning`` works.
JOURNAL_FORMAT = "%(syslog_priority)s%(levelname)s %(name)s [%(process)d] %(message)s"
SYSLOG_PRIORITY = {"CRITICAL": "<2>", "ERROR": "<3>", "WARNING": "<4>", "INFO": "<6>", "DEBUG": "<7>"}


def under_journald(stream=None) -> bool:
    """Whether ``stream`` (standard error) is connected to the journal: systemd sets
    ``JOURNAL_STREAM`` to that stream's ``device:inode`` (systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JournalFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.syslog_priority = SYSLOG_PRIORITY.get(record.levelname, "<6>")
        return super().format(record)


def _formatter(fmt: str, journal: bool = False) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return JournalFormatter() if journal else logging.Formatter(TEXT_FORMAT)


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that every process of ``postern serve`` (supervisor, API
    arbiter and workers, services) appends to. Each write holds an ``flock`` on
    ``FILE.lock``, so exactly one process rotates and no line lands in a file another
    process has just renamed: a process whose open file was rotated away reopens it."""

    def __init__(self, filename, max_bytes: int, backup_count: int):
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, mode="a", maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        self._lock_file = open(f"{self.baseFilename}.lock", "a")  # noqa: SIM115 (closed in close)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                self._reopen_if_rotated()
                if self.maxBytes > 0 and self.stream.tell() + len(line.encode("utf-8")) > self.maxBytes:
                    if self.stream.tell() > 0:
                        self.doRollover()
                self.stream.write(line)
                self.stream.flush()
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        except Exception:  # noqa: BLE001 (logging.Handler.emit: a failed write must not raise)
            self.handleError(record)

    def _reopen_if_rotated(self) -> None:
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            on_disk = None
        if self.stream is not None:
            mine = os.fstat(self.stream.fileno())
            if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
                self.stream.seek(0, os.SEEK_END)
                return
            self.stream.close()
        self.stream = self._open()
        self.stream.seek(0, os.SEEK_END)

    def close(self) -> None:
        super().close()
        if not self._lock_file.closed:
            self._lock_file.close()


def log_file_path(log_config, data_dir) -> Path | None:
    """``log.file`` as a path (relative: to ``data_dir``), or None when there is none."""
    if not getattr(log_config, "file", ""):
        return None
    path = Path(log_config.file)
    return path if path.is_absolute() else Path(data_dir) / path


def make_handler(fmt: str, stream=None) -> logging.Handler:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(fmt, journal=under_journald(stream)))
    handler.addFilter(RedactingFilter())
    return handler


def make_file_handler(fmt: str, path, max_bytes: int, backup_count: int) -> logging.Handler:
    handler = SharedRotatingFileHandler(path, max_bytes, backup_count)
    handler.setFormatter(_formatter(fmt))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: str = "info", fmt: str = "text", *, log_config=None, data_dir=None) -> None:
    """Route the root logger (and so gunicorn's and plugins') through one handler, and
    through the log file as well when ``log_config.file`` is set."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(make_handler(fmt))
    path = log_file_path(log_config, data_dir) if log_config is not None else None
    root.setLevel(level.upper())
    if path is not None:
        try:
            root.addHandler(make_file_handler(fmt, path, log_config.max_bytes, log_config.backup_count))
        except OSError as exc:  # e.g. an operator's CLI command without write access to it
            logging.getLogger("postern.logs").warning("not writing the log file %s: %s", path, exc)


def gunicorn_logconfig(log_config, data_dir=None) -> dict:
    """gunicorn's ``logconfig_dict``: its error and access logs through our handlers."""
    level, fmt = log_config.level, log_config.format
    journal = under_journald()
    if fmt == "json":
        formatter = {"()": JsonFormatter}
    elif journal:
        formatter = {"()": JournalFormatter}
    else:
        formatter = {"format": TEXT_FORMAT}
    handlers = {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "postern",
            "filters": ["redact"],
            "stream": "ext://sys.stderr",
        }
    }
    path = log_file_path(log_config, data_dir)
    if path is not None:
        handlers["file"] = {
            "()": SharedRotatingFileHandler,
            "filename": str(path),
            "max_bytes": log_config.max_bytes,
            "backup_count": log_config.backup_count,
            "formatter": "postern_file",
            "filters": ["redact"],
        }
    names = list(handlers)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {
            "postern": formatter,
            "postern_file": {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT},
        },
        "handlers": handlers,
        "root": {"level": level.upper(), "handlers": names},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": names, "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": names, "propagate": False},
        },
    }
