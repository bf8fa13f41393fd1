"""Automatic drills against a real PostgreSQL and real files: a full drill is
a timed scratch restore compared with the RTO, a partial drill restores only
two chosen tables, a checksum drill reads every copy back; no scratch
database or file is left behind."""

import sqlite3

import pytest

from catalog import backup_runs, services
from catalog.models import AuditEvent, Backup, Source
from drills import services as drills
from drills.models import Drill
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness.sample_db import create_tricky_database
from tests.support import ScratchDatabases, database_exists

pytestmark = pytest.mark.django_db(transaction=True)


# The scratch databases this test made that are still on a server.
scratch_databases = ScratchDatabases()


@pytest.fixture(autouse=True)
def record_scratch_databases(monkeypatch):
    """The shared server may hold other scratch databases: a killed run's, another run's at work meanwhile."""
    scratch_databases.start(monkeypatch)


@pytest.fixture
def source(pg_database, tmp_path, s3_bucket):
    create_tricky_database(pg_database, big_rows=3000)
    source = pg_source(pg_database)
    source.rto_minutes = 240
    source.save()
    plan = make_plan(
        source,
        [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)],
        retention_mode="last",
        keep_last=10,
        verify_new_backups=False,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return source


def run(source, kind):
    """Queues a drill as "Run now" does; the test cluster runs it inline."""
    drill = drills.create_drill("test", source, kind)
    drill.refresh_from_db()
    assert drill.status in (Drill.PASSED, Drill.FAILED)
    return drill


def test_it_runs_a_full_drill_as_a_timed_scratch_restore_against_the_rto(source, pg_server):
    drill = run(source, Drill.FULL)

    assert drill.status == Drill.PASSED, drill.summary
    assert drill.verification.kind == "restore" and drill.verification.status == "passed"
    assert drill.backup == source.last_good_backup()
    assert drill.seconds == pytest.approx(drill.verification.restore_seconds) and 0 < drill.seconds < 240 * 60
    assert drill.rto_minutes == 240 and drill.within_rto() is True
    assert "into a scratch database took" in drill.summary and "(RTO 4 h)" in drill.summary
    assert drill.verification.evidence["scratch_dropped"] is True
    assert scratch_databases(pg_server) == []
    actions = list(AuditEvent.objects.filter(object_type="drill").values_list("action", flat=True))
    assert {"drill.run", "drill.start", "drill.passed"} <= set(actions)


def test_a_full_drill_slower_than_the_rto_fails(source, monkeypatch):
    from catalog.models import Verification

    source.rto_minutes = 1
    source.save()
    real_restore = drills.run_verification_for

    def restore_measured_at_61_seconds(drill, backup, kind):
        # A real restore of the test database takes a second; the verdict is what is tested here.
        job = real_restore(drill, backup, kind)
        Verification.objects.filter(pk=job.pk).update(restore_seconds=61.0)
        job.refresh_from_db()
        return job

    monkeypatch.setattr(drills, "run_verification_for", restore_measured_at_61_seconds)
    drill = run(source, Drill.FULL)

    assert drill.status == Drill.FAILED and drill.verification.status == "passed"
    assert drill.seconds == 61.0 and drill.rto_minutes == 1 and drill.within_rto() is False
    assert "took 1 min: slower than the RTO target of 1 min" in drill.summary


def test_a_partial_drill_restores_only_the_largest_and_the_smallest_table(source, pg_server):
    backup = source.last_good_backup()
    counts = backup.table_counts
    largest = max(counts, key=lambda table: (counts[table], table))
    assert largest == "public.big_ledger"

    drill = run(source, Drill.PARTIAL)

    assert drill.status == Drill.PASSED, drill.summary
    job = drill.restore_job
    chosen = drills.partial_tables(backup)
    assert len(chosen) == 2 and largest in chosen
    assert job.status == RestoreJob.SUCCEEDED and job.target == RestoreJob.NEW and job.tables == chosen
    # Only the chosen tables were restored and compared, each with the backup's row count.
    assert job.report["row_counts"] == {table: {"backup": counts[table], "restored": counts[table]} for table in chosen}
    assert drill.seconds == job.report["total_seconds"] > 0
    assert f"{largest} 3000" in drill.summary and "scratch dropped" in drill.summary
    assert not database_exists(pg_server, job.target_database)
    assert scratch_databases(pg_server) == []


def test_a_checksum_drill_reads_every_copy_back(source):
    drill = run(source, Drill.CHECKSUM)

    assert drill.status == Drill.PASSED, drill.summary
    assert drill.verification.kind == "checksum" and drill.verification.status == "passed"
    assert len(drill.verification.evidence["copies"]) == 2 and drill.seconds > 0
    assert drill.summary.startswith(
        f"Checksum verification #{drill.verification_id} of backup #{drill.backup_id} passed"
    )


def test_a_drill_of_a_damaged_backup_fails_and_says_why(source, tmp_path):
    backup = source.last_good_backup()
    for copy in backup.copies.all():
        if copy.destination.kind == "local":
            path = tmp_path / "disk" / copy.key
            data = bytearray(path.read_bytes())
            data[200] ^= 0xFF
            path.write_bytes(bytes(data))

    drill = run(source, Drill.CHECKSUM)

    assert drill.status == Drill.FAILED and "damaged" in drill.summary


def test_only_one_drill_of_a_kind_is_active_per_source(source):
    drills.create_drill("test", source, Drill.FULL, enqueue_it=False)
    with pytest.raises(services.Refused, match="already queued or running"):
        drills.create_drill("test", source, Drill.FULL, enqueue_it=False)
    drills.create_drill("test", source, Drill.CHECKSUM, enqueue_it=False)  # another kind may run


def test_sqlite_drills_restore_into_scratch_files(tmp_path):
    path = tmp_path / "app" / "app.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE TABLE tags (name TEXT)")
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n}",) for n in range(300)])
        conn.executemany("INSERT INTO tags VALUES (?)", [("a",), ("b",)])
        conn.executemany("INSERT INTO users VALUES (?)", [("u",)] * 10)
    source = services.save_source(
        "test", Source(name="App", engine="sqlite", sqlite_path=str(path), port=None, rto_minutes=60)
    )
    plan = make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite", verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error

    results = {kind: run(source, kind) for kind in (Drill.CHECKSUM, Drill.PARTIAL, Drill.FULL)}

    assert {kind: drill.status for kind, drill in results.items()} == dict.fromkeys(results, Drill.PASSED), [
        drill.summary for drill in results.values()
    ]
    partial = results[Drill.PARTIAL].restore_job
    assert partial.tables == ["notes", "tags"]
    assert sorted(partial.report["row_counts"]) == ["notes", "tags"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["app.sqlite3"]  # the scratch file is gone
    assert "(RTO 1 h)" in results[Drill.FULL].summary
