"""Several hosts, one WAL receiver: the supervisor whose session on the
shared metadata database holds the advisory lock streams; the others stand
by, and one of them takes over within seconds when the leader's host dies.
Real PostgreSQL metadata; the hosts are `manage.py wal_receiver` processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from pitr.receiver import STANDBY_INTERVAL, Leadership
from tests.harness.worker import ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_session_leads_and_another_takes_over_when_it_is_gone():
    first, second = Leadership(), Leadership()
    try:
        assert first.held() is True
        assert second.held() is False
        assert first.held() is True  # still its session, still its lock
        first.release()  # its host died: the session, and the lock, went with it
        assert second.held() is True
        assert first.held() is False
    finally:
        first.release()
        second.release()


class Host:
    """`manage.py wal_receiver` as one host runs it, logging to a file."""

    def __init__(self, tmp_path, name):
        self.log_path = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.harness.worker_settings",
            "DATABASE_URL": database_url(connection.settings_dict),
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "wal_receiver"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log(self):
        return self.log_path.read_text()

    def says(self, words, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if words in self.log():
                return True
            time.sleep(0.1)
        raise AssertionError(f"{self.log_path.name} never said {words!r}:\n{self.log()[-2000:]}")

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def test_when_the_leading_host_dies_a_standing_by_one_leads_within_seconds(tmp_path):
    leader = Host(tmp_path, "first")
    leader.says("Leading:")
    standby = Host(tmp_path, "second")
    try:
        standby.says("Standing by:")
        time.sleep(2 * STANDBY_INTERVAL)
        assert "Leading:" not in standby.log()  # one leader at a time

        leader.kill()  # SIGKILL: no goodbye, as when its host dies
        started = time.monotonic()
        standby.says("Leading:", timeout=15)
        assert time.monotonic() - started < 3 * STANDBY_INTERVAL + 2
    finally:
        leader.kill()
        standby.kill()
