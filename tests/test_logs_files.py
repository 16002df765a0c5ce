"""The optional log file: rotated by size, redacted like standard error; and the journal's
format (no timestamp, a syslog priority prefix) when standard error is the journal."""

from __future__ import annotations

import logging
import os

from postern.core.configsections import LogConfig
from postern.core.logs import configure_logging, gunicorn_logconfig, make_handler, under_journald


def test_the_log_file_rotates_by_size_and_is_redacted(tmp_path):
    log = LogConfig(file="logs/postern.log", max_bytes=1024, backup_count=2)
    configure_logging("info", "text", log_config=log, data_dir=tmp_path)
    try:
        logger = logging.getLogger("postern.test.rotation")
        for n in range(60):
            logger.warning("line %03d with key pk_agent_Zx81abcdEFGH1234 and some padding text", n)
    finally:
        configure_logging("info", "text")  # closes the file handler
    files = sorted(p.name for p in (tmp_path / "logs").iterdir() if not p.name.endswith(".lock"))
    assert files == ["postern.log", "postern.log.1", "postern.log.2"]
    for name in files:
        text = (tmp_path / "logs" / name).read_text()
        assert os.path.getsize(tmp_path / "logs" / name) <= 1024
        assert "pk_agent_" not in text and "[redacted]" in text
    assert "line 059" in (tmp_path / "logs" / "postern.log").read_text()


def test_gunicorn_writes_the_same_file(tmp_path):
    conf = gunicorn_logconfig(LogConfig(file=str(tmp_path / "p.log")), tmp_path)
    assert conf["handlers"]["file"]["filename"] == str(tmp_path / "p.log")
    assert conf["loggers"]["gunicorn.access"]["handlers"] == ["console", "file"]
    assert "file" not in gunicorn_logconfig(LogConfig(), tmp_path)["handlers"]


def test_under_journald_no_timestamp_and_a_priority(tmp_path, monkeypatch):
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(stream)
        logger = logging.getLogger("postern.test.journal")
        logger.propagate = False
        logger.addHandler(make_handler("text", stream))
        try:
            logger.warning("relay said no for pk_admin_AAAA1111")
        finally:
            logger.handlers.clear()
    line = path.read_text().strip()
    assert line.startswith("<4>WARNING postern.test.journal [") and "[redacted]" in line
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream's: not ours
    with open(path) as stream:
        assert not under_journald(stream)
