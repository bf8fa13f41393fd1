"""A small filesystem that fills up: a tmpfs mounted for one test (needs root)."""

import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def tmpfs(mount_point, size="256k"):
    """Mounts a tmpfs of `size` on `mount_point` (made if missing), unmounted on the way out."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    os.makedirs(mount_point, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem at tmp_path / "tiny"."""
    with tmpfs(tmp_path / "tiny") as mount_point:
        yield mount_point
