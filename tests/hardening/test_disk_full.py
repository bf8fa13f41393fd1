"""The disk a job spools to fills up: the restore's temporary dump file
(RESTORE_TMP_DIR), the export's per-table spool and a SQLite restore test's
scratch file (DATA_DIR/tmp), and the WAL spool of continuous protection.
The job fails (or the receiver stops) with "Disk full on …", its temporary
file is gone, nothing was changed or stored, and with room again the next
run succeeds.

(A local destination that fills up is in tests/catalog/test_backup_failures.py.)"""

import uuid

import psycopg
import pytest

from catalog import backup_runs, services
from catalog.models import AuditEvent, Backup, Copy
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.disk import tiny_disk, tmpfs  # noqa: F401 — tiny_disk is a fixture
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import execute_sql, files_under, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source_db(pg_database):
    create_tricky_database(pg_database, big_rows=20_000)  # a dump a few times the tiny disk
    return pg_database


def database_exists(conninfo, name):
    with psycopg.connect(**{**conninfo, "dbname": "postgres"}) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def test_a_restore_whose_temporary_file_fills_the_disk_fails_and_leaves_nothing(
    source_db, tmp_path, tiny_disk, settings
):
    plan = make_plan(pg_source(source_db), [local_destination(tmp_path / "backups")], verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    # The free-space check before spooling passes: here because the recorded
    # size is understated, in life because another job fills the disk meanwhile.
    Backup.objects.filter(pk=backup.pk).update(raw_bytes=1000)
    settings.RESTORE_TMP_DIR = tiny_disk
    name = f"sr_full_{uuid.uuid4().hex[:8]}"

    job = restore_now(Backup.objects.get(pk=backup.pk), target="new", database=name)

    assert job.status == RestoreJob.FAILED
    assert job.summary.startswith(f"Disk full on {tiny_disk}"), job.summary
    assert "while writing the temporary copy of the dump; it was removed and nothing was restored" in job.summary
    assert files_under(tiny_disk) == []
    assert not database_exists(source_db, name)
    assert not database_exists(source_db, job.report["scratch_database"])
    assert AuditEvent.objects.filter(action="restore.failed", object_id=str(job.pk)).exists()

    settings.RESTORE_TMP_DIR = tmp_path / "roomy"
    again = restore_now(Backup.objects.get(pk=backup.pk), target="new", database=name)
    try:
        assert again.status == RestoreJob.SUCCEEDED, again.summary
        assert table_fingerprints({**source_db, "dbname": name}) == table_fingerprints(source_db)
    finally:
        execute_sql({**source_db, "dbname": "postgres"}, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_export_whose_spool_fills_the_disk_fails_and_leaves_nothing(source_db, tmp_path, settings):
    destination = tmp_path / "backups"
    plan = make_plan(
        pg_source(source_db),
        [local_destination(destination)],
        format="csv",
        verify_new_backups=False,
        export_tables=[{"schema": "public", "name": "big_ledger", "where": ""}],
    )
    settings.DATA_DIR = tmp_path / "data"  # the export spools each table into DATA_DIR / "tmp"

    with tmpfs(settings.DATA_DIR / "tmp") as spool:
        backup = backup_runs.start_backup("test", plan)
        backup.refresh_from_db()
        assert files_under(spool) == []

    assert backup.status == Backup.FAILED
    assert backup.error.startswith(f"Disk full on {spool}, where the export spools each table"), backup.error
    assert set(backup.copies.values_list("status", flat=True)) == {Copy.FAILED}
    assert files_under(destination) == []
    assert AuditEvent.objects.filter(action="backup.failed", object_id=str(backup.pk)).exists()

    again = backup_runs.start_backup("test", plan)  # DATA_DIR / "tmp" has room again
    again.refresh_from_db()
    assert again.status == Backup.SUCCEEDED, again.error
    assert again.table_counts == {"public.big_ledger": 20_000}


def test_a_sqlite_restore_test_whose_scratch_file_fills_the_disk_fails_and_leaves_nothing(tmp_path, settings):
    import sqlite3

    from catalog import verification
    from catalog.models import Source, Verification

    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n} " + "x" * 100,) for n in range(5000)])
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(path), port=None))
    plan = make_plan(source, [local_destination(tmp_path / "backups")], format="sqlite", verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    settings.DATA_DIR = tmp_path / "data"  # restore tests of SQLite backups write a scratch file in DATA_DIR / "tmp"

    with tmpfs(settings.DATA_DIR / "tmp") as scratch:
        result = verification.create_verification("test", backup, Verification.RESTORE)
        result.refresh_from_db()
        assert files_under(scratch) == []

    assert result.status == Verification.FAILED
    assert result.summary == f"Disk full on {scratch}", result.summary
    assert AuditEvent.objects.filter(action="verification.failed", object_id=str(result.pk)).exists()

    again = verification.create_verification("test", backup, Verification.RESTORE)
    again.refresh_from_db()
    assert again.status == Verification.PASSED, again.summary
    assert again.evidence["rows"] == {"notes": 5000}


@pytest.mark.slow
def test_a_full_wal_spool_stops_the_receiver_with_the_reason_and_loses_no_segment(tmp_path, settings):
    from pitr import wal
    from pitr.models import ContinuousProtection
    from tests.pitr.wal_helpers import cluster_source, running_supervisor, stored, wal_cluster, write_wal
    from tests.pitr.wal_helpers import wait_for as wait_until

    cluster = wal_cluster()  # 1 MB segments: one does not fit the spool
    try:
        source = cluster_source(cluster)
        with tmpfs(tmp_path / "spool", size="512k") as spool:
            settings.WAL_SPOOL_DIR = spool
            wal.enable_protection("test", source, destinations=[local_destination(tmp_path / "local")])
            with running_supervisor():
                write_wal(cluster, megabytes=1)
                protection = wait_until(
                    lambda: ContinuousProtection.objects.filter(
                        source=source, receiver_error__startswith="Disk full on"
                    ).first(),
                    timeout=30,
                )
            assert stored(source) == []
        assert protection.receiver_error.startswith(f"Disk full on {spool}/"), protection.receiver_error
        assert "pg_receivewal cannot write the WAL spool" in protection.receiver_error

        settings.WAL_SPOOL_DIR = tmp_path / "roomy"  # room again: the slot kept every segment meanwhile
        with running_supervisor():
            last = write_wal(cluster, megabytes=2)
            wait_until(lambda: wal.is_stored(source, last), timeout=60)
        names = [segment.name for segment in stored(source)]
        assert wal.missing_segments(source, names[0], names[-1]) == []
        assert wal.continuity(source)["ok"]
    finally:
        cluster.stop()
