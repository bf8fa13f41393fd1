"""A real worker (`manage.py qcluster`) killed with SIGKILL in the middle of a
backup, an S3 upload, a restore and pruning: the one-minute tick records the
job as failed because its worker stopped, nothing half-written stays in a
destination or is marked good, and the next run succeeds."""

import os
import shutil
import signal
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from catalog import backup_runs, orphans, queues, tasks
from catalog.models import AuditEvent, Backup, Copy
from restore import services as restores
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.harness.worker import after_heartbeat_timeout, process_state, status_of, worker  # noqa: F401 — the fixture
from tests.support import execute_sql, files_under, restore_now, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def sweep_backup(backup):
    with after_heartbeat_timeout():
        assert tasks.tick()["swept"] == [backup.pk]
    backup.refresh_from_db()
    return backup


def assert_failed_because_the_worker_stopped(backup):
    assert backup.status == Backup.FAILED
    assert "worker stopped responding" in backup.error
    assert AuditEvent.objects.filter(action="backup.failed", object_id=str(backup.pk), actor_label="monitor").exists()
    assert set(backup.copies.values_list("status", flat=True)) == {Copy.FAILED}


def assert_no_orphans(*destinations):
    for destination in destinations:
        assert orphans.scan(destination) == []


def run_to_the_end(worker, plan, timeout=60):
    """A new worker takes the next backup of the plan to success."""
    if not worker.alive():
        worker.start()
    backup = backup_runs.start_backup("test", plan)
    wait_for(lambda: status_of(backup) not in Backup.ACTIVE_STATUSES, timeout=timeout)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, f"{backup.error}\n{worker.log()[-3000:]}"
    return backup


def assert_restores_equal_rows(backup, source_db):
    name = f"sr_after_kill_{backup.pk}"
    try:
        job = restore_now(backup, target="new", database=name)
        assert job.status == "succeeded", job.summary
        assert table_fingerprints({**source_db, "dbname": name}) == table_fingerprints(source_db)
    finally:
        pg.drop_database(name)


def throttle_until(pid, condition, timeout=20):
    """Lets a process run in short slices (SIGCONT … SIGSTOP) until `condition()`
    holds, and leaves it stopped there: a dump caught at a chosen point."""
    deadline = time.monotonic() + timeout
    os.kill(pid, signal.SIGSTOP)
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
        assert process_state(pid) not in ("", "Z"), "the process ended before the condition held"
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.15)  # the pipeline drains what was read and writes or uploads it


@pytest.fixture
def big_database(pg_database):
    """About 11 MB of table data, so a dump takes long enough to be caught and spans several S3 parts."""
    create_tricky_database(pg_database, big_rows=10)
    execute_sql(
        pg_database,
        "INSERT INTO big_ledger SELECT g, 'acct', 1, md5(g::text) || md5((-g)::text) || "
        "md5((g * 7)::text) FROM generate_series(11, 100000) g",
    )
    return pg_database


# --- (a) a backup to a local destination ----------------------------------------


def partial_bytes(directory):
    return sum(f.stat().st_size for f in Path(directory).rglob("*.partial-*"))


def test_a_backup_killed_mid_dump_is_failed_by_the_tick_and_leaves_no_partial_file(worker, big_database, tmp_path):
    destination = local_destination(tmp_path / "local")
    # Uncompressed by the pipeline, so that what pg_dump sends reaches the file at once.
    plan = make_plan(pg_source(big_database), [destination], compression="none", verify_new_backups=False)

    backup = backup_runs.start_backup("test", plan)
    pg_dump = worker.wait_for_process("pg_dump", "--snapshot")[0]
    throttle_until(pg_dump, lambda: partial_bytes(tmp_path / "local") > 0)
    worker.kill()
    worker.start()  # the next worker, for the next run

    assert status_of(backup) == Backup.RUNNING  # nobody is left to say otherwise
    assert partial_bytes(tmp_path / "local") > 0
    backup = sweep_backup(backup)

    assert_failed_because_the_worker_stopped(backup)
    assert files_under(tmp_path / "local") == []
    assert_no_orphans(destination)
    assert_restores_equal_rows(run_to_the_end(worker, plan), big_database)


# --- (b) a backup while its S3 multipart upload is in flight ---------------------


def test_a_backup_killed_during_its_multipart_upload_leaves_no_upload_open(worker, big_database, s3_bucket):
    # About 33 MB: the upload opens with its first 8 MB part, and the rest of the
    # dump must leave time to catch it open even when pg_dump was found late.
    execute_sql(
        big_database,
        "INSERT INTO big_ledger SELECT g, 'acct', 1, md5(g::text) || md5((-g)::text) || "
        "md5((g * 7)::text) FROM generate_series(100001, 300000) g",
    )
    destination = s3_destination(s3_bucket)
    plan = make_plan(
        pg_source(big_database), [destination], format="plain", compression="none", verify_new_backups=False
    )
    endpoint, bucket = s3_bucket["endpoint_url"], s3_bucket["bucket"]

    backup = backup_runs.start_backup("test", plan)
    pg_dump = worker.wait_for_process("pg_dump", "--snapshot")[0]
    throttle_until(pg_dump, lambda: s3.open_uploads(endpoint, bucket))
    worker.kill()
    worker.start()

    assert status_of(backup) == Backup.RUNNING
    in_flight = destination.storage().full_key(backup.copies.get().key)
    assert [upload["Key"] for upload in s3.open_uploads(endpoint, bucket)] == [in_flight]
    backup = sweep_backup(backup)

    assert_failed_because_the_worker_stopped(backup)
    assert s3.open_uploads(endpoint, bucket) == [] and s3.all_keys(endpoint, bucket) == []
    assert_no_orphans(destination)
    assert_restores_equal_rows(run_to_the_end(worker, plan), big_database)


# --- (c) a restore into a new database ----------------------------------------------


def stopping_pg_restore(directory, marker):
    """A pg_restore that, once (when `marker` exists), restores the schema and
    then stops itself: a restore caught with its database half made. Only
    the one restoring into a database (--dbname): a `pg_restore --list`
    reading the table of contents on the way passes through."""
    directory.mkdir()
    wrapper = directory / "pg_restore"
    real = shutil.which(settings.PG_RESTORE)
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --dbname "*)\n'
        f'  if rm "{marker}" 2>/dev/null; then "{real}" --section=pre-data "$@" || exit 1; kill -STOP $$; fi;;\n'
        "esac\n"
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def worker_env(tmp_path):
    """The workers here restore with stopping_pg_restore (tests restore in-process otherwise)."""
    return {"PG_RESTORE": str(stopping_pg_restore(tmp_path / "bin", tmp_path / "stop-once"))}


def databases_like(conninfo, pattern):
    with psycopg.connect(**{**conninfo, "dbname": "postgres"}) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]


def test_a_restore_killed_mid_way_drops_its_half_made_database(worker, pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=2000)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path / "local")], verify_new_backups=False)
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    (tmp_path / "stop-once").touch()
    target = f"sr_restored_{backup.pk}"

    job = restores.request_restore("test", backup, target="new", database=target)
    wait_for(lambda: any(process_state(pid) == "T" for pid in worker.processes("pg_restore")), timeout=60)
    scratch = RestoreJob.objects.get(pk=job.pk).report["scratch_database"]
    with psycopg.connect(**{**pg_database, "dbname": scratch}) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'big_ledger'").fetchone() == (1,)
    assert list(restores.spool_dir(job).iterdir())  # the dump pg_restore reads
    worker.kill()
    worker.start()

    assert status_of(job) == RestoreJob.RUNNING
    with after_heartbeat_timeout():
        assert tasks.tick()["swept_restores"] == [job.pk]

    job.refresh_from_db()
    assert job.status == RestoreJob.FAILED and "worker stopped responding" in job.summary
    assert job.steps[-1]["name"] == "fetch, verify and restore"  # how far it got: before the target existed
    assert AuditEvent.objects.filter(action="restore.failed", object_id=str(job.pk)).exists()
    assert databases_like(pg_database, scratch) == []
    assert databases_like(pg_database, target) == []
    assert not restores.spool_dir(job).exists()

    again = restores.request_restore("test", backup, target="new", database=target)
    try:
        wait_for(lambda: status_of(again) not in RestoreJob.ACTIVE_STATUSES, timeout=60)
        again.refresh_from_db()
        assert again.status == RestoreJob.SUCCEEDED, again.summary
        assert table_fingerprints({**pg_database, "dbname": target}) == table_fingerprints(pg_database)
    finally:
        pg.drop_database(target)


# --- (d) pruning ---------------------------------------------------------------------


def stored(copy):
    storage = copy.destination.storage()
    return storage.exists(copy.key) and storage.exists(copy.manifest_key)


def assert_catalog_matches_storage(backups):
    """No copy row claims an object that is gone, and none that is stored is called pruned."""
    for copy in Copy.objects.filter(backup__in=backups).select_related("destination"):
        assert stored(copy) == (copy.status == Copy.DURABLE), (copy, copy.status)


def lock_waiters(pid):
    """Backends waiting for a lock `pid` holds."""
    with psycopg.connect(**pg.ensure_server(), dbname="postgres", autocommit=True) as conn:
        return conn.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]).fetchall()


def test_pruning_killed_mid_way_leaves_the_catalog_true_and_the_next_prune_finishes(
    worker, pg_database, s3_bucket, tmp_path
):
    create_tricky_database(pg_database, big_rows=200)
    local, remote = local_destination(tmp_path / "local"), s3_destination(s3_bucket)
    plan = make_plan(
        pg_source(pg_database), [local, remote], verify_new_backups=False, retention_mode="last", keep_last=1
    )
    backups = [backup_runs.run_backup(backup_runs.create_backup("test", plan, trigger="schedule").pk) for _ in range(3)]
    assert {b.status for b in backups} == {Backup.SUCCEEDED}
    old = backups[:2]

    # The old backups' S3 copy rows are locked, so the worker is caught after it
    # pruned a local copy and before it could record the S3 one.
    with psycopg.connect(**pg.ensure_server(), dbname=connection.settings_dict["NAME"]) as blocker:
        blocker.execute(
            "SELECT id FROM catalog_copy WHERE backup_id = ANY(%s) AND destination_id = %s FOR UPDATE",
            [[b.pk for b in old], remote.pk],
        )
        queues.enqueue_work("catalog.tasks.prune_nightly", task_name="prune-nightly")
        wait_for(lambda: lock_waiters(blocker.info.backend_pid), timeout=60)
        worker.kill()
    worker.start()

    assert Copy.objects.filter(backup__in=old, status=Copy.PRUNED).count() == 1
    assert not Backup.objects.filter(pk__in=[b.pk for b in old], pruned_at__isnull=False).exists()
    assert_catalog_matches_storage(backups)

    tasks.prune_nightly()

    assert_catalog_matches_storage(backups)
    for backup in old:
        backup.refresh_from_db()
        assert backup.is_pruned() and set(backup.copies.values_list("status", flat=True)) == {Copy.PRUNED}
        event = AuditEvent.objects.get(action="backup.prune", object_id=str(backup.pk))
        assert len(event.changes["copies"]) == 2
    assert set(backups[2].copies.values_list("status", flat=True)) == {Copy.DURABLE}
    assert_no_orphans(local, remote)
    assert_restores_equal_rows(run_to_the_end(worker, plan), pg_database)
