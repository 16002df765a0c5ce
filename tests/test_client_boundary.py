"""The client/server boundary: ``postern.client`` imports nothing of the server, ships
alone as the ``postern-client`` wheel (only ``postern/client``, needing only httpx), and
works against a real Postern with every server package blocked; mock mode is reached
through ``postern.testing``."""

from __future__ import annotations

import ast
import email.parser
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from support.server import seeding
from support.world import make_tenant

import postern

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "postern" / "client"
SCRIPT = (Path(__file__).parent / "support" / "client_alone.py").read_text()
THIRD_PARTY = {"httpx"}  # the client distribution's only dependency
# Optional and imported lazily, by one module each: paying x402 offers (docs/billing.md)
# needs pip install 'x402[evm]'; a client without it works until it is given a payer.
OPTIONAL = {"payments.py": {"x402"}}


def imports_of(path: Path) -> set[str]:
    """Every module a file of postern/client imports, at any depth (inside functions
    too), relative imports made absolute; string imports are flagged, never needed."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "postern" if node.level == 2 else "postern.client" if node.level == 1 else ""
            found.add(".".join(part for part in (base, node.module) if part))
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in ("import_module", "__import__"):
                found.add("<string import>")
    return found


def test_client_sources_import_only_the_stdlib_httpx_and_themselves():
    sources = sorted(CLIENT.rglob("*.py"))
    assert len(sources) >= 6
    foreign = {}
    for path in sources:
        for module in imports_of(path):
            top = module.split(".")[0]
            if module.startswith("postern.client") or top in sys.stdlib_module_names or top in THIRD_PARTY:
                continue
            if top in OPTIONAL.get(path.name, ()):
                continue
            foreign.setdefault(path.name, []).append(module)
    assert foreign == {}


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory) -> Path:
    """The postern-client wheel, built offline from a copy of clients/python (the build
    leaves nothing in the checkout). Its postern/client is a symlink to the real one."""
    project = ROOT / "clients" / "python"
    assert (project / "postern" / "client").resolve() == CLIENT  # one source, no drift
    tree = tmp_path_factory.mktemp("project") / "python"
    shutil.copytree(project, tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    done = subprocess.run([*build, str(tree)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = out.glob("postern_client-*.whl")
    return wheel


def test_the_client_wheel_holds_only_the_client_and_needs_only_httpx(client_wheel):
    with zipfile.ZipFile(client_wheel) as wheel:
        names = wheel.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    payload = sorted(n for n in names if ".dist-info/" not in n)
    assert payload == sorted(f"postern/client/{p.name}" for p in CLIENT.glob("*.py"))
    assert "postern/__init__.py" not in names  # the server's package owns that file
    assert meta["Name"] == "postern-client" and meta["Version"] == postern.__version__
    assert meta.get_all("Requires-Dist") == ["httpx>=0.27"]
    assert meta["Requires-Python"] == ">=3.11"


@pytest.fixture
def live(serve, db_url):
    with seeding(db_url):
        key = make_tenant("acme").agent_key(handle="alone", max_mailboxes=5).agent_key
    server = serve()
    server.key = key
    return server


def run_client(live, tmp_path, *, isolated: bool, path: list[str], mock: bool) -> dict:
    args = {"url": live.url, "key": live.key, "smtp_port": live.smtp_port, "path": path, "mock": mock}
    args["inbox"] = "wheel" if isolated else "checkout"
    command = [sys.executable, *(["-S"] if isolated else []), "-c", SCRIPT, json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def site_without_postern(tmp_path: Path) -> Path:
    """httpx's site-packages with every ``postern`` entry left out: where the server is
    installed as a wheel (tox), its ``postern/__init__.py`` would otherwise win over the
    unpacked client's namespace package."""
    site = Path(httpx.__file__).resolve().parent.parent
    linked = tmp_path / "site"
    linked.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("postern", "__editable__")):
            (linked / entry.name).symlink_to(entry)
    return linked


def assert_worked_alone(seen: dict) -> None:
    assert seen["agent"] == "alone"
    assert seen["waited"] == ["over SMTP"] and seen["raw_has_subject"] and seen["thread"]
    assert seen["not_found"] == "not_found" and seen["bad_key"] == 401
    assert "from postern.testing import mock_client" in seen["old_mock_flag"]
    assert seen["webhook"] == "message.received"
    assert seen["server_modules"] == [] and seen["blocked_attempts"] == []


@pytest.mark.slow
def test_the_client_alone_works_against_a_real_server_and_mock_mode_is_in_postern_testing(live, tmp_path, client_wheel):
    # 1. Only the wheel and httpx's site-packages (-S: no .pth, so no editable server).
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(client_wheel) as wheel:
        wheel.extractall(unpacked)
    seen = run_client(
        live, tmp_path, isolated=True, path=[str(unpacked), str(site_without_postern(tmp_path))], mock=False
    )
    assert_worked_alone(seen)
    assert seen["client_file"].startswith(str(unpacked))
    # 2. The checkout with the server installed but blocked; then mock mode, unblocked.
    seen = run_client(live, tmp_path, isolated=False, path=[], mock=True)
    assert_worked_alone(seen)
    # The checkout's client, or the installed copy where the server is installed as a wheel (tox).
    assert seen["client_file"] == importlib.util.find_spec("postern.client").origin
    assert seen["mock_same_class"] and seen["mock_waited"] == ["Your code"]
