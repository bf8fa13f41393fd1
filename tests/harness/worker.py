"""A real django-q2 worker: `manage.py qcluster` in a process group of its
own, for tests that kill it mid-job or pull the database from under it.

The worker runs tests/harness/worker_settings.py (the test settings with
tasks going through the broker) against whatever DATABASE_URL it is given;
it shares the test process's environment, so the same data directory and
master key. The `worker` fixture points it at the test database, so a test
queues work with the ORM and reads the outcome with the ORM
(`django_db(transaction=True)`: the worker must see committed rows)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]


def database_url(settings_dict):
    """The libpq URL of a Django database (the test database, say)."""
    return (
        f"postgresql://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"
    )


def descendants(pid):
    """Every process below `pid`, also those that started a session of their
    own (pg_dump, psql): what a service manager's cgroup would hold."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_name(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def process_state(pid):
    """The one-letter state of a process (R, S, T for stopped, …), "" once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


class Worker:
    def __init__(self, database_url, log_path, **env):
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.harness.worker_settings",
            "DATABASE_URL": database_url,
            "Q_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = Path(log_path)
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def restart(self, **env):
        """Killed and started again, with `env` added to its environment."""
        self.kill()
        self.env.update(env)
        return self.start()

    def processes(self, name, argument=None):
        """Pids of the worker's descendants running the program `name` (with
        `argument` on its command line, e.g. pg_dump's "--snapshot" rather than
        its "--version" check)."""
        return [
            pid
            for pid in descendants(self.process.pid)
            if command_name(pid) == name and (argument is None or any(argument in arg for arg in command_line(pid)))
        ]

    def wait_for_process(self, name, argument=None, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.processes(name, argument)
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {name} process under the worker within {timeout} s:\n{self.log()[-3000:]}")

    def kill(self):
        """SIGKILL to the cluster, its worker processes and the tools they
        started, all at once, as the OOM killer or `systemctl kill -s KILL` would."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = descendants(self.process.pid)
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_gone(pids)

    def stop(self, timeout=15):
        """A clean shutdown (SIGTERM), or a kill when it does not come."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @staticmethod
    def _wait_gone(pids, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(process_state(pid) not in ("", "Z") for pid in pids):
            time.sleep(0.05)


@pytest.fixture
def worker_env():
    """Environment variables added for the `worker` fixture's worker; a test
    module overrides this fixture to change them."""
    return {}


@pytest.fixture
def worker(transactional_db, monkeypatch, tmp_path, worker_env):
    """A started qcluster on the test database; tasks the test queues go to it."""
    from django.db import connection
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    started = Worker(database_url(connection.settings_dict), tmp_path / "worker.log", **worker_env).start()
    yield started
    started.kill()


def status_of(job):
    return type(job).objects.values_list("status", flat=True).get(pk=job.pk)


def after_heartbeat_timeout():
    """The moment the tick finds the job of a killed worker stale."""
    return time_machine.travel(timezone.now() + timedelta(seconds=settings.HEARTBEAT_TIMEOUT + 5))
