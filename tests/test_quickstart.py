"""The README's quick start, end to end: SQLite metadata, a real qcluster
process, the web UI in Chromium, and a backup that succeeds."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.harness.pg import free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "quick-start-Pa55"

pytestmark = pytest.mark.slow


def quickstart_env(data_dir, port):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(
        STRONGROOM_DATA_DIR=str(data_dir),
        STRONGROOM_ADMIN_PASSWORD=PASSWORD,
        STRONGROOM_BIND=f"127.0.0.1:{port}",
        DJANGO_SETTINGS_MODULE="backupsite.settings",
    )
    return env


def wait_for_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def strongroom(tmp_path):
    port = free_port()
    env = quickstart_env(tmp_path / "data", port)
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    bootstrap = subprocess.run(manage + ["bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert "master key" in bootstrap.stdout
    server = subprocess.Popen(manage + ["serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base_url}/login/")
        yield base_url, tmp_path / "data", server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def tasks_run_by(data_dir, func):
    """The clusters that ran (and recorded) tasks of `func`."""
    with sqlite3.connect(data_dir / "strongroom.sqlite3") as conn:
        return {row[0] for row in conn.execute("SELECT cluster FROM django_q_task WHERE func = ?", (func,))}


def test_it_backs_up_its_own_database_from_the_browser(strongroom, page):
    base_url, data_dir, server = strongroom

    page.goto(f"{base_url}/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base_url}/plans/")
    page.click("text=Daily metadata backup")
    page.fill("input[name=label]", "pre-migration")
    page.click("button:has-text('Back up now')")
    page.wait_for_url(re.compile(r".*/backups/\d+/$"))
    page.wait_for_selector(".status-succeeded", timeout=60_000)

    with sqlite3.connect(data_dir / "strongroom.sqlite3") as conn:
        status, label, sha256 = conn.execute("SELECT status, label, sha256 FROM catalog_backup").fetchone()
    assert (status, label, len(sha256)) == ("succeeded", "pre-migration", 64)
    stored = [p for p in (data_dir / "backups").rglob("*.enc")]
    assert len(stored) == 1
    # The backup ran on the work cluster; the one-minute tick on the monitor
    # cluster's own worker, so that alerts never wait behind a backup.
    assert tasks_run_by(data_dir, "catalog.tasks.run_backup") == {"strongroom"}
    deadline = time.monotonic() + 60
    while not tasks_run_by(data_dir, "catalog.tasks.tick") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert tasks_run_by(data_dir, "catalog.tasks.tick") == {"strongroom-monitor"}

    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=40) == 0
    output = server.stdout.read().decode()
    assert "Stopped." in output
    assert "Starting gunicorn" in output  # the production server, not Django's development one


def test_the_production_server_refuses_to_run_with_debug_on(settings):
    settings.DEBUG = True

    with pytest.raises(CommandError, match="DEBUG is on.*manage.py serve --dev"):
        call_command("serve")
