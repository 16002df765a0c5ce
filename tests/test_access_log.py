"""The API's access line (postern.httpconn.AccessLogger): written after the event-loop
iteration that answered, in order, and at once outside a loop."""

from __future__ import annotations

import asyncio
import datetime
import logging
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from postern.httpconn import AccessLogger, LimitedProtocol
from postern.server import ACCESS_LOG_FORMAT


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def logger():
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", ACCESS_LOG_FORMAT)
    log = AccessLogger(cfg)
    lines = Lines()
    log.access_log.handlers = [lines]  # only ours: nothing reaches the test's stdout
    yield log, lines.lines
    log.access_log.handlers = []


def answer(log, path, status="200 OK", sent=17):
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": path}
    log.access(SimpleNamespace(status=status, sent=sent), None, environ, datetime.timedelta(milliseconds=3))


def test_lines_of_one_iteration_follow_it_in_order(logger):
    log, lines = logger

    async def wave():
        for n in range(5):
            answer(log, f"/v1/inboxes/{n}/messages/wait")
        held = list(lines)  # the responses of this iteration go out before any line
        await asyncio.sleep(0)
        return held

    held = asyncio.run(wave())
    assert held == []
    assert lines == [f'127.0.0.1 "GET /v1/inboxes/{n}/messages/wait" 200 17 3ms' for n in range(5)]


def test_a_later_iteration_gets_its_own_flush(logger):
    log, lines = logger

    async def two_waves():
        answer(log, "/a")
        await asyncio.sleep(0)
        first = list(lines)
        answer(log, "/b", status="404 Not Found", sent=0)
        await asyncio.sleep(0)
        return first

    assert asyncio.run(two_waves()) == ['127.0.0.1 "GET /a" 200 17 3ms']
    assert lines[1] == '127.0.0.1 "GET /b" 404 0 3ms'


def test_outside_a_loop_the_line_is_written_at_once(logger):
    log, lines = logger
    answer(log, '/with"quote')
    assert lines == ['127.0.0.1 "GET /with\\"quote" 200 17 3ms']  # gunicorn's escaping kept


def test_no_line_when_the_access_logger_is_above_info(logger):
    log, lines = logger
    log.access_log.setLevel(logging.WARNING)
    try:
        answer(log, "/quiet")
    finally:
        log.access_log.setLevel(logging.INFO)
    answer(log, "/heard")
    assert lines == ['127.0.0.1 "GET /heard" 200 17 3ms']


def test_the_protocol_gives_the_line_its_three_fields():
    request = SimpleNamespace(method="GET", path="/v1/me", headers=[("AUTHORIZATION", "Bearer pk_agent_x")])
    environ = LimitedProtocol._build_environ(None, request, ("127.0.0.1", 8000), ("10.0.0.7", 5555))
    assert environ == {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/me", "REMOTE_ADDR": "10.0.0.7"}
    assert LimitedProtocol._build_environ(None, request, None, None)["REMOTE_ADDR"] == "-"


def test_a_broken_line_is_reported_not_raised(logger, monkeypatch):
    # Lines.emit formats without logging's handleError guard, as a handler that raises
    # would: the format error reaches AccessLogger._write, which reports it.
    log, lines = logger
    errors = []
    monkeypatch.setattr(log, "error", errors.append)
    log.cfg.set("access_log_format", "%(h)d")  # a str for %d: TypeError in formatting

    async def wave():
        answer(log, "/x")
        await asyncio.sleep(0)

    asyncio.run(wave())
    assert lines == [] and len(errors) == 1 and "TypeError" in errors[0]
