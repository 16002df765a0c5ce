"""The example send backend (examples/postern_example_sender) installed as a package, the
way an operator installs a third-party plugin, then chosen in config and sent through."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import falcon.testing
import pytest
from support.world import make_tenant

from postern.api import create_app
from postern.core import zones
from postern.core.config import load_config
from postern.core.models import Message
from postern.core.runtime import build_postern

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "postern_example_sender"
SPF = "ip4:192.0.2.10"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory the example package is pip-installed into, entry point and all. A
    copy is built, since pip builds in the source tree; --no-deps: Postern is already here."""
    source = tmp_path_factory.mktemp("src") / "postern_example_sender"
    shutil.copytree(EXAMPLE, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def config_text(outbox: Path) -> str:
    return f'[send]\nbackend = "example"\n\n[send.example]\ndirectory = "{outbox}"\nspf = ["{SPF}"]\n'


def test_postern_plugins_lists_the_installed_plugin_and_its_backend(site, env, tmp_path):
    path = tmp_path / "postern.toml"
    path.write_text(config_text(tmp_path / "out"))
    environ = {**os.environ, **env, "PYTHONPATH": str(site), "POSTERN_CONFIG": str(path)}
    postern = Path(sys.executable).with_name("postern")
    result = subprocess.run(
        [str(postern), "plugins", "--json"], env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    [plugin] = [p for p in listing["plugins"] if p["name"] == "example"]
    assert plugin == {
        "name": "example",
        "module": "postern_example_sender",
        "version": "0.1.0",
        "hooks": ["postern_register_backends"],
    }
    [send] = [r for r in listing["roles"] if r["role"] == "send"]
    assert send["backend"] == "example" and send["plugin"] == "example" and send["error"] is None
    assert send["choices"] == ["acs", "example", "smtp_local"]
    # Without the installed package the same config is refused, naming the backend.
    del environ["PYTHONPATH"]
    refused = subprocess.run([str(postern), "plugins"], env=environ, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "send backend 'example' is not available" in refused.stdout


def test_a_message_sent_through_the_api_reaches_the_plugin(site, env, db, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(site))  # as if installed into this environment
    outbox = tmp_path / "out"
    path = tmp_path / "postern.toml"
    path.write_text(config_text(outbox))
    postern = build_postern(load_config(path, environ=env))
    assert postern.registry.get("send", "example").plugin == "example"

    client = falcon.testing.TestClient(create_app(postern))
    tenant = make_tenant("acme")
    headers = {"Authorization": f"Bearer {tenant.agent_key(handle='alice').agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={}).json
    body = {"to": ["someone@example.org"], "subject": "through the example", "text": "hi"}
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json=body)
    assert resp.status_code == 201, resp.text
    sent = resp.json
    assert sent["status"] == "sent"
    row = Message.get_by_id(sent["id"])
    assert row.backend == "example" and row.backend_message_id == f"{sent['id']}.eml"

    [dropped] = outbox.iterdir()
    raw = dropped.read_bytes()
    assert dropped.name == f"{sent['id']}.eml"
    assert raw.startswith(b"DKIM-Signature:")  # its dkim_sign signed with the tenant's key
    assert b"Subject: through the example" in raw and b"someone@example.org" in raw
    # Its spf_mechanisms make the tenant's SPF record.
    assert zones.spf_value(postern, tenant.domain) == f"v=spf1 {SPF} -all"
