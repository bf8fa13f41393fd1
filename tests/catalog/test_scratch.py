"""One scratch-restore path (catalog.scratch) for restores, test restores and
drills, against a real PostgreSQL and a real S3 server: a damaged copy is
skipped for an intact one, the skipped copy's report names its first bad
byte (found by comparing it with the copy that restored, not the start of
the encrypted segment that failed), and a scratch database whose restore
failed is never left behind."""

import threading

import pytest

from catalog import backup_runs, scratch, verification
from catalog.engine import crypto, dumpers, restorers
from catalog.engine.errors import Cancelled
from catalog.models import Backup
from drills import services as drills
from drills.models import Drill
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.sample_db import create_tricky_database
from tests.support import ScratchDatabases, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


# The scratch databases this test made that are still on a server.
scratch_databases = ScratchDatabases()


@pytest.fixture(autouse=True)
def record_scratch_databases(monkeypatch):
    """The shared server may hold other scratch databases: a killed run's, another run's at work meanwhile."""
    scratch_databases.start(monkeypatch)


@pytest.fixture
def source(pg_database, tmp_path, s3_bucket):
    create_tricky_database(pg_database, big_rows=1000)
    source = pg_source(pg_database)
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


@pytest.fixture
def backup(source):
    return source.last_good_backup()


def local_path(backup, tmp_path):
    return tmp_path / "disk" / backup.object_key


def flip_local_byte(backup, tmp_path):
    """Flips one byte in the middle of the local copy; returns its offset and
    where the encrypted segment holding it starts (all the restore itself
    can tell)."""
    path = local_path(backup, tmp_path)
    data = bytearray(path.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    header, length = crypto.read_header(bytes(data))
    sealed = header["segment_size"] + crypto.TAG_SIZE
    return offset, length + (offset - length) // sealed * sealed


def restore_page(client, job):
    return client.get(job.get_absolute_url()).content.decode()


def test_a_restore_falls_back_to_the_intact_copy_and_names_the_first_bad_byte(
    backup, tmp_path, admin_client, pg_server
):
    bad, segment = flip_local_byte(backup, tmp_path)

    job = restore_now(backup, target="new", database="restored_from_s3")

    try:
        assert job.status == "succeeded", job.summary
        assert job.report["copy"] == "Off-site S3"
        [skipped] = job.report["skipped_copies"]
        assert skipped.startswith(
            f"Local disk: it differs from the intact copy on Off-site S3 first at byte {bad}; encrypted segment "
        )
        assert f"(bytes {segment}–" in skipped and segment < bad  # the segment start is what it said before
        fetch = next(step for step in job.steps if step["name"] == "fetch, verify and restore")
        assert fetch["detail"].startswith(
            f"from Off-site S3 (skipped: Local disk: it differs from the intact copy on "
            f"Off-site S3 first at byte {bad}; "
        )
        assert f"first at byte {bad}" in restore_page(admin_client, job)
        assert job.report["table_of_contents"]["tables"] > 0  # listed while the dump was spooled
    finally:
        pg.drop_database("restored_from_s3")
    assert scratch_databases(pg_server) == []


def test_a_test_restore_falls_back_and_its_evidence_names_the_first_bad_byte(backup, tmp_path, admin_client, pg_server):
    bad, segment = flip_local_byte(backup, tmp_path)

    check = verification.create_verification("test", backup, "restore")
    check.refresh_from_db()

    assert check.status == "passed", check.summary
    assert check.copy.destination.name == "Off-site S3"
    [skipped] = check.evidence["skipped_copies"]
    assert (skipped["destination"], skipped["offset"], skipped["compared_with"]) == ("Local disk", bad, "Off-site S3")
    assert skipped["segment_start"] == segment
    assert check.summary.startswith(
        f"Copy on Local disk is damaged (it differs from the intact copy on Off-site S3 "
        f"first at byte {bad}; encrypted segment "
    )
    assert "restored from Off-site S3 instead" in check.summary
    # The evidence pages and compliance reports read.
    assert {
        "rows",
        "schema_objects",
        "table_of_contents",
        "scratch_dropped",
        "skipped_copies",
        "restore_seconds",
    } <= set(check.evidence)
    assert check.evidence["rows"] == backup.table_counts and check.evidence["scratch_dropped"] is True
    assert check.evidence["schema_objects"] == check.evidence["table_of_contents"]
    assert f"first at byte {bad}" in admin_client.get(check.get_absolute_url()).content.decode()
    assert scratch_databases(pg_server) == []

    # The checksum verification finds the same byte the same way.
    checksum = verification.create_verification("test", backup, "checksum")
    checksum.refresh_from_db()
    damaged = next(c for c in checksum.evidence["copies"] if c["destination"] == "Local disk")
    assert damaged["offset"] == bad


def test_drills_fall_back_and_name_the_first_bad_byte(source, backup, tmp_path, pg_server):
    bad, _ = flip_local_byte(backup, tmp_path)

    partial = drills.create_drill("test", source, Drill.PARTIAL)
    partial.refresh_from_db()

    assert partial.status == Drill.PASSED, partial.summary
    job = partial.restore_job
    assert job.report["copy"] == "Off-site S3"
    assert job.report["skipped_copies"][0].startswith(
        f"Local disk: it differs from the intact copy on Off-site S3 first at byte {bad}; "
    )

    full = drills.create_drill("test", source, Drill.FULL)
    full.refresh_from_db()

    assert full.status == Drill.PASSED, full.summary
    assert full.verification.evidence["skipped_copies"][0]["offset"] == bad
    assert f"it differs from the intact copy on Off-site S3 first at byte {bad}" in full.summary
    assert scratch_databases(pg_server) == []


def test_a_copy_of_another_size_is_said_as_such(backup, tmp_path, pg_server):
    path = local_path(backup, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    size = len(data) - 100

    job = restore_now(backup, target="new", database="restored_after_a_cut")
    try:
        assert job.status == "succeeded", job.summary
        assert job.report["skipped_copies"][0].startswith(
            f"Local disk: the object has {size} bytes; {len(data)} were stored: it is cut short, the last 100 are "
            "missing; "
        )
    finally:
        pg.drop_database("restored_after_a_cut")

    check = verification.create_verification("test", backup, "restore")
    check.refresh_from_db()
    assert check.status == "passed", check.summary
    [skipped] = check.evidence["skipped_copies"]
    assert skipped["offset"] == size and "compared_with" not in skipped
    assert scratch_databases(pg_server) == []


def test_when_no_copy_restores_nothing_is_left_and_each_copy_says_why(backup, tmp_path, s3_bucket, pg_server):
    flip_local_byte(backup, tmp_path)
    bucket, key = s3_bucket["bucket"], "strongroom/" + backup.object_key
    client = s3.client(s3_bucket["endpoint_url"])
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 3] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    server = dumpers.normalize_conninfo(backup.source.conninfo())

    with pytest.raises(scratch.NoCopyRestored) as failed:
        scratch.restore_into_scratch(backup, server, restorers.scratch_name(backup.pk))

    # No intact copy to compare with: the segment that failed is all that is known.
    assert [s["destination"] for s in failed.value.skipped] == ["Local disk", "Off-site S3"]
    assert all(s["offset"] is None and s["segment_start"] is not None for s in failed.value.skipped)
    assert scratch_databases(pg_server) == []

    job = restore_now(backup, target="new", database="never_restored")
    assert job.status == "failed" and job.summary.startswith("No copy could be read: Local disk: "), job.summary
    check = verification.create_verification("test", backup, "restore")
    check.refresh_from_db()
    assert check.status == "failed" and check.summary.startswith("No copy could be restored: Local disk: ")
    assert check.evidence["scratch_dropped"] is True and len(check.evidence["skipped_copies"]) == 2
    assert scratch_databases(pg_server) == []


def test_a_failure_that_is_not_the_copys_stops_and_drops_the_scratch_database(backup, settings, pg_server):
    server = dumpers.normalize_conninfo(backup.source.conninfo())
    settings.PG_RESTORE = "false"  # pg_restore fails: every copy would, so none other is tried

    lines = []
    with pytest.raises(restorers.RestoreError):
        scratch.restore_into_scratch(backup, server, restorers.scratch_name(backup.pk), log=lines.append)
    assert [line for line in lines if line.startswith("Restoring from")] == [
        f"Restoring from Local disk ({backup.readable_copies()[0].location_display()})"
    ]
    assert scratch_databases(pg_server) == []

    settings.PG_RESTORE = "pg_restore"
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        scratch.restore_into_scratch(backup, server, restorers.scratch_name(backup.pk), cancel_event=cancelled)
    assert scratch_databases(pg_server) == []


def test_the_spooled_and_the_streamed_restore_list_the_same_contents(backup, tmp_path, pg_server):
    server = dumpers.normalize_conninfo(backup.source.conninfo())
    found = []
    for spool in (None, tmp_path / "spool"):
        name = restorers.scratch_name(backup.pk)
        done = scratch.restore_into_scratch(backup, server, name, spool_dir=spool, jobs=2)
        try:
            found.append((done.table_of_contents, restorers.restored_counts({**server, "dbname": name})))
        finally:
            restorers.ScratchDatabase(server, name).drop()
        assert done.copy.destination.name == "Local disk" and done.skipped == [] and done.seconds > 0

    (streamed, streamed_counts), (spooled, spooled_counts) = found
    assert streamed == spooled and spooled["tables"] > 0
    assert streamed_counts == spooled_counts and spooled_counts[1] == spooled
    assert not (tmp_path / "spool").exists()  # the spool file is removed, and the directory given for it
    assert scratch_databases(pg_server) == []


def test_a_skipped_copy_is_unreadable_or_damaged_in_its_own_words(backup, tmp_path):
    local_path(backup, tmp_path).unlink()

    check = verification.create_verification("test", backup, "restore")
    check.refresh_from_db()

    assert check.status == "passed", check.summary
    [skipped] = check.evidence["skipped_copies"]
    assert skipped["damaged"] is False and skipped["offset"] is None
    assert check.summary.startswith("Copy on Local disk cannot be read (Cannot read ")


def test_a_cancel_while_comparing_copies_drops_the_restored_scratch_database(backup, tmp_path, monkeypatch, pg_server):
    flip_local_byte(backup, tmp_path)
    server = dumpers.normalize_conninfo(backup.source.conninfo())

    def cancelled_meanwhile(copy, intact, cancel_event=None):
        raise Cancelled("Cancelled by request")

    monkeypatch.setattr(scratch, "first_bad_byte", cancelled_meanwhile)
    with pytest.raises(Cancelled):
        scratch.restore_into_scratch(backup, server, restorers.scratch_name(backup.pk))
    assert scratch_databases(pg_server) == []
