"""Every hook has a section in docs/plugins.md and a test named after it."""

import ast
from pathlib import Path

import pytest

from postern.core import hookspecs

ROOT = Path(__file__).parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("postern_"))


def _test_names() -> set[str]:
    names = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_there_are_hooks():
    assert "postern_register_backends" in HOOKS and len(HOOKS) >= 9


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### {hook}\n" in docs, f"docs/plugins.md has no '### {hook}' section"
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and len(spec.__doc__.strip()) > 20, f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in _test_names(), f"no test named test_hook_{hook}"
