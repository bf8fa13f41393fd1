"""The systemd units in deploy/systemd: each one systemd itself accepts
(`systemd-analyze verify`, with the paths pointed at this checkout), and each
service runs as the service user with the usual hardening."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").iterdir())
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
HARDENING = ("User=strongroom", "UMask=0077", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict")


def test_there_is_a_unit_for_each_part_and_one_target():
    assert {unit.name for unit in UNITS} == {
        "strongroom.target",
        "strongroom-web.service",
        "strongroom-worker.service",
        "strongroom-monitor.service",
        "strongroom-host.service",
        "strongroom-wal.service",
    }


@pytest.mark.parametrize("unit", SERVICES, ids=lambda unit: unit.name)
def test_each_service_runs_hardened_as_the_service_user(unit):
    lines = unit.read_text().splitlines()
    for setting in HARDENING:
        assert setting in lines, f"{unit.name} lacks {setting}"
    assert "ReadWritePaths=/var/lib/strongroom" in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_every_unit(tmp_path):
    env_file = tmp_path / "strongroom.env"
    env_file.write_text("")
    for unit in UNITS:
        text = (
            unit.read_text()
            .replace("/opt/strongroom", str(ROOT))
            .replace("/etc/strongroom/strongroom.env", str(env_file))
            .replace("=strongroom\n", "=root\n")  # User= and Group=: no such user on a test machine
        )
        (tmp_path / unit.name).write_text(text)
    names = [str(tmp_path / unit.name) for unit in UNITS]

    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True)

    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
