"""What may import what (docs/design.md, "Layers"), read from the source with ``ast``.

Every ``import`` counts, including those inside functions and under TYPE_CHECKING: a
lazy import still ties the two modules together. An edge goes to the module named, or
to the submodule when ``from package import name`` names one.

Rules still broken on purpose carry a strict xfail naming the issue item ("architecture
seams") that fixes them: those tests go red (XPASS) once the item lands, until the xfail
is removed. The tests beside them make sure nothing new breaks the rule meanwhile.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The core may import none of these (nor postern.cli or anything in it).
ABOVE_CORE = (
    "postern.api",
    "postern.console",
    "postern.server",
    "postern.supervisor",
    "postern.mcp",
    "postern.plugins",
    "postern.client",
)

# No plugin imports another (the SMTP listener both receive backends serve is postern.core.smtp).
KNOWN_PLUGIN_CROSSINGS: set[tuple[str, str]] = set()

# Cycles that remain, each through an import inside a function. Any other cycle fails.
# None left: the last, dkim <-> zones (signing looked up its zone), went with core/signing.py.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the postern modules it imports, for every module under root/postern."""
    paths = {module_name(p, root): p for p in (root / "postern").rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names if alias.name.split(".")[0] == "postern")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] != "postern":
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in paths else known(base))
        edges.discard(None)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@cache
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def core_imports_above() -> set[tuple[str, str]]:
    return {
        (m, e)
        for m, edges in graph().items()
        if within(m, "postern.core")
        for e in edges
        if e.startswith("postern.cli") or any(within(e, above) for above in ABOVE_CORE)
    }


def plugin_crossings() -> set[tuple[str, str]]:
    def plugin(m: str) -> str | None:
        parts = m.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "plugins" else None

    return {(m, e) for m, edges in graph().items() if plugin(m) for e in edges if plugin(e) not in (None, plugin(m))}


def test_graph_sees_imports_at_top_level_and_inside_functions():
    g = graph()
    assert "postern.core.views" in g["postern.api.messages"]  # top level
    assert "postern.core.runtime" in g["postern.cli.context"]  # inside a function
    assert "postern.core.fastsql" in g["postern.core.webhooks.events"]  # `from postern.core import fastsql`


def test_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "postern"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from postern import b\n")
    (pkg / "b.py").write_text("def f():\n    from postern.c import x\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(tmp_path)) == {frozenset({"postern.a", "postern.b", "postern.c"})}


def test_core_imports_nothing_above_it():
    assert core_imports_above() == set()


def test_webhook_events_import_neither_the_api_nor_reading():
    """Item 2: events build their JSON from postern.core.views, not the web layer, and
    no longer close the cycle inboxes -> webhooks.events -> mail.reading -> inboxes."""
    events = graph()["postern.core.webhooks.events"]
    assert "postern.core.views" in events
    assert not any(within(e, "postern.api") for e in events)
    assert "postern.core.mail.reading" not in events
    assert not any({"postern.core.inboxes", "postern.core.webhooks.events"} <= c for c in cycles(graph()))


def test_no_product_module_imports_the_old_serialize_module():
    assert not (ROOT / "postern/api/serialize.py").exists()
    assert not [m for m, edges in graph().items() if "postern.api.serialize" in edges]


def test_no_new_import_cycles():
    new = cycles(graph()) - KNOWN_CYCLES
    assert not new, f"new import cycles: {[sorted(c) for c in new]}"


def test_plugins_cross_no_further_than_known():
    assert plugin_crossings() <= KNOWN_PLUGIN_CROSSINGS


def test_no_plugin_imports_another_plugin():
    assert plugin_crossings() == set()


def test_plugin_commands_import_only_the_cli_context():
    """Item 6: postern.cli.context is the CLI's public module; its other modules are
    free to change. The WildDuck commands are the built-in example."""
    used = {(m, e) for m, edges in graph().items() if within(m, "postern.plugins") for e in edges}
    used = {(m, e) for m, e in used if within(e, "postern.cli")}
    assert ("postern.plugins.wildduck.commands", "postern.cli.context") in used
    assert {e for _, e in used} == {"postern.cli.context"}


def test_cli_modules_form_no_cycle():
    assert not any(any(within(m, "postern.cli") for m in c) for c in cycles(graph()))


def test_client_imports_only_the_client():
    g = graph()
    outside = {(m, e) for m, edges in g.items() if within(m, "postern.client") for e in edges}
    outside = {(m, e) for m, e in outside if not within(e, "postern.client")}
    assert outside == set()
