"""Where the tests live, for child processes that must import ``support``."""

from pathlib import Path

TESTS_DIR = Path(__file__).parent
