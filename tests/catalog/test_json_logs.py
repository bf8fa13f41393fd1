"""LOG_FORMAT=json: a JSON object a line, with the host, and, while a worker
runs a job, the job and the source the line is about; a real backup's lines
carry them, and the first line after the job's end does not."""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import backup_runs
from catalog.logformat import JsonFormatter
from catalog.models import Backup
from tests.factories import sqlite_plan

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_a_jobs_log_lines_say_which_job_source_and_host_they_are_about(tmp_path, monkeypatch):
    plan = sqlite_plan(tmp_path)
    backup = backup_runs.create_backup("test", plan)
    handler = Lines()
    logger = logging.getLogger("catalog")
    logger.addHandler(handler)
    original = backup_runs.stream_backup

    def stream_saying_so(backup, copies):  # a line logged while the job runs
        logging.getLogger("catalog.backup_runs").warning("streaming %s", backup.pk)
        return original(backup, copies)

    monkeypatch.setattr(backup_runs, "stream_backup", stream_saying_so)
    try:
        done = backup_runs.run_backup(backup.pk)
        logging.getLogger("catalog.after").warning("after the job")
    finally:
        logger.removeHandler(handler)

    assert done.status == Backup.SUCCEEDED, done.error
    during = next(line for line in handler.lines if line["message"] == f"streaming {backup.pk}")
    assert during["job"] == f"backup-{backup.pk}" and during["source"] == plan.source_id
    assert during["host"] == socket.gethostname() and during["pid"] == os.getpid()
    assert during["level"] == "WARNING" and during["logger"] == "catalog.backup_runs"
    after = handler.lines[-1]
    assert after["message"] == "after the job" and "job" not in after


def test_log_format_json_is_what_the_processes_write():
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "backupsite.settings"}
    code = "import django, logging; django.setup(); logging.getLogger('catalog').warning('hello %s', 'there')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)

    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello there" and line["level"] == "WARNING" and line["host"] == socket.gethostname()
