"""The metadata database restarts while a backup runs. It runs on a throwaway
cluster of its own (the shared server cannot be restarted), with a real
worker (`manage.py qcluster`): the backup is recorded once the database is
back, its heartbeat survives the outage, and the worker keeps serving."""

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.hardening.test_worker_killed import big_database  # noqa: F401 — the fixture
from tests.harness import pg
from tests.harness.worker import ROOT, Worker
from tests.support import execute_sql, files_under

START_BACKUP = """
import json
from catalog import backup_runs
from catalog.models import BackupPlan, Source
from tests.factories import local_destination, make_plan, pg_source

plan = BackupPlan.objects.filter(name="Nightly").first()
if plan is None:
    plan = make_plan(pg_source(json.loads({source!r})), [local_destination({directory!r})], verify_new_backups=False)
print("BACKUP", backup_runs.start_backup("test", plan).pk)
"""


@pytest.fixture
def metadata(tmp_path):
    """A migrated metadata database on a cluster the test may restart: (cluster, its URL, subprocess env)."""
    cluster = pg.Cluster()
    try:
        with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE strongroom_meta")
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/strongroom_meta"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.harness.worker_settings", "DATABASE_URL": url}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        yield cluster, url, env
    finally:
        cluster.stop()


@pytest.fixture
def slow_dump_database(big_database):
    """Five times the rows of big_database: its dump lasts a second or more, so
    the test catches pg_dump running even on an idle machine (at 11 MB it was
    sometimes over before the first look)."""
    execute_sql(
        big_database,
        "INSERT INTO big_ledger SELECT g, 'acct', 1, md5(g::text) || md5((-g)::text) || "
        "md5((g * 7)::text) FROM generate_series(100001, 500000) g",
    )
    return big_database


def start_backup(env, source, directory):
    """Queues a backup of the plan (made on first use) in the metadata database, as the web UI would."""
    code = START_BACKUP.format(source=json.dumps(source), directory=str(directory))
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("BACKUP")[1])


def backup_row(cluster, backup_id):
    with psycopg.connect(**cluster.server, dbname="strongroom_meta") as conn:
        return conn.execute(
            "SELECT status, error, heartbeat_at FROM catalog_backup WHERE id = %s", [backup_id]
        ).fetchone()


def copies_of(cluster, backup_id):
    with psycopg.connect(**cluster.server, dbname="strongroom_meta") as conn:
        return conn.execute("SELECT status, key FROM catalog_copy WHERE backup_id = %s", [backup_id]).fetchall()


def wait_until_finished(cluster, backup_id, worker, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = backup_row(cluster, backup_id)
        if row[0] not in ("queued", "running"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"backup {backup_id} still {row[0]}:\n{worker.log()[-4000:]}")


def test_a_backup_survives_a_restart_of_the_metadata_database(metadata, slow_dump_database, tmp_path):
    cluster, url, env = metadata
    worker = Worker(url, tmp_path / "worker.log").start()
    try:
        first = start_backup(env, slow_dump_database, tmp_path / "local")
        pg_dump = worker.wait_for_process("pg_dump", "--snapshot", timeout=60)[0]
        # The dump waits while the database it reports to goes down and comes back.
        os.kill(pg_dump, signal.SIGSTOP)
        cluster.pg_ctl("-m", "fast", "stop")
        time.sleep(2)  # a couple of heartbeats fail
        cluster.start()
        os.kill(pg_dump, signal.SIGCONT)

        status, error, _ = wait_until_finished(cluster, first, worker)
        assert (status, error) == ("succeeded", "")
        assert "Heartbeat of Backup" in worker.log()  # it did beat into the outage
        assert [s for s, _ in copies_of(cluster, first)] == ["durable"]
        key = copies_of(cluster, first)[0][1]
        assert files_under(tmp_path / "local") == sorted([key, key + ".manifest.json", key + ".manifest.json.globals"])

        # The worker keeps serving: the next backup runs too.
        second = start_backup(env, slow_dump_database, tmp_path / "local")
        assert wait_until_finished(cluster, second, worker)[:2] == ("succeeded", "")
        assert worker.alive()
    finally:
        worker.kill()
