"""Imported by every Python process a test's ``postern serve`` starts (tests/ is on its
PYTHONPATH, tests/support/server.py): on ``STACKS_SIGNAL`` each one writes its threads'
stacks to its log, which the report of a failed test shows (support.server.post_mortem).
A hang in CI is then diagnosed from CI's output alone."""

import faulthandler
import signal

faulthandler.register(signal.SIGRTMIN + 3, all_threads=True, chain=False)
