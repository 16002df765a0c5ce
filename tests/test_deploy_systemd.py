"""deploy/systemd: every unit passes ``systemd-analyze verify`` and carries the hardening
docs/deployment.md promises. verify needs ExecStart's binary to exist, so each unit is
checked as a copy whose /usr/local/bin/postern is this environment's ``postern``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
INSTALLED = "/usr/local/bin/postern"
HARDENING = {
    "User": "postern",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/postern",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
}
EXEC = {
    "postern.service": f"{INSTALLED} serve",
    "postern-api.service": f"{INSTALLED} serve --only api",
    "postern-services.service": f"{INSTALLED} serve --only services",
}


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def postern_binary() -> str:
    found = Path(sys.executable).parent / "postern"
    return str(found) if found.exists() else (shutil.which("postern") or "")


@pytest.mark.parametrize("name", sorted(EXEC))
def test_unit_is_hardened(name):
    unit = settings((UNITS / name).read_text())
    for key, value in HARDENING.items():
        assert value in unit.get(key, []), f"{name}: {key}={value} missing"
    assert unit["ExecStart"] == [EXEC[name]]
    # Only the unit that may bind :25/:53 keeps a capability, and only that one.
    expected = ["CAP_NET_BIND_SERVICE"] if name != "postern-api.service" else [""]
    assert unit["CapabilityBoundingSet"] == expected


@pytest.mark.skipif(not Path(ANALYZE).exists() and not os.environ.get("CI"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", sorted(EXEC))
def test_unit_verifies(name, tmp_path):
    binary = postern_binary()
    assert binary, "no postern console script in this environment"
    copy = tmp_path / name
    copy.write_text((UNITS / name).read_text().replace(INSTALLED, binary))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
