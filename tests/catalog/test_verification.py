"""Verification against a real PostgreSQL and a real S3 server: good backups
pass with exact evidence, damage is found and named, restore tests fall back
to a good copy, and no scratch database is ever left behind."""

import os
import time
from pathlib import Path

import psycopg
import pytest

from catalog import backup_runs, keyring, services, verification
from catalog.engine import crypto
from catalog.models import Backup, Copy, Verification
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.sample_db import create_tricky_database
from tests.support import NewFiles, ScratchDatabases, in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
SEGMENT = 1 << 20


# The scratch databases this test made that are still on a server.
scratch_databases = ScratchDatabases()


@pytest.fixture(autouse=True)
def record_scratch_databases(monkeypatch):
    """The shared server may hold other scratch databases: a killed run's, another run's at work meanwhile."""
    scratch_databases.start(monkeypatch)


# Objects pg_dump lists separately in its table of contents, to compare after a restore.
MORE_SCHEMA = """
CREATE INDEX big_ledger_account ON big_ledger (account);
CREATE INDEX measurements_taken ON measurements (taken);
CREATE TABLE accounts (code text PRIMARY KEY, opened_at timestamptz, serial_no int GENERATED ALWAYS AS IDENTITY);
INSERT INTO accounts (code) SELECT DISTINCT account FROM big_ledger;
ALTER TABLE big_ledger ADD CONSTRAINT big_ledger_account_fk FOREIGN KEY (account) REFERENCES accounts (code);
CREATE PROCEDURE close_books(day date) LANGUAGE sql AS $$ SELECT 1 $$;
"""


@pytest.fixture
def database(pg_database):
    create_tricky_database(pg_database, big_rows=3000)
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute(MORE_SCHEMA)
    return pg_database


@pytest.fixture
def plan(database, tmp_path, s3_bucket):
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    return make_plan(pg_source(database), destinations, retention_mode="last", keep_last=10)


def backup_of(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def verify(backup, kind):
    result = verification.create_verification("test", backup, kind)
    result.refresh_from_db()
    assert not result.is_active()
    return result


def local_path(backup, tmp_path):
    return tmp_path / "disk" / backup.object_key


def test_a_good_backup_passes_both_kinds_with_exact_evidence(plan, database, pg_server):
    backup = backup_of(plan)

    # Every new backup is checksummed right after it is taken.
    auto = backup.verifications.get()
    assert (auto.kind, auto.trigger, auto.status) == ("checksum", "policy", "passed")
    assert {c["destination"] for c in auto.evidence["copies"]} == {"Local disk", "Off-site S3"}
    assert all(c["sha256"] == backup.sha256 and c["plain_bytes"] == backup.raw_bytes for c in auto.evidence["copies"])
    assert backup.copies.filter(verified_at__isnull=False).count() == 2

    restore = verify(backup, "restore")
    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == backup.table_counts and restore.evidence["rows_match"]
    assert restore.evidence["schema_objects"] == restore.evidence["table_of_contents"]
    assert restore.evidence["table_of_contents"] == {
        "tables": 6,
        "indexes": 4,
        "constraints": 5,
        "sequences": 3,
        "functions": 2,
        "views": 1,
        "triggers": 1,
        "types": 1,
        "policies": 0,
        "rules": 0,
    }
    assert restore.evidence["scratch_dropped"]
    assert restore.restore_seconds > 0 and restore.copy.destination.name == "Local disk"
    assert "rows match the backup's snapshot exactly" in restore.summary
    assert scratch_databases(pg_server) == []


def test_row_counts_are_those_of_the_snapshot_even_with_writes_during_the_dump(plan, database, pg_server):
    backup = backup_runs.create_backup("test", plan)
    # pg_dump's snapshot is taken, then counting waits on this lock while rows arrive elsewhere.
    with psycopg.connect(**database) as blocker:
        blocker.execute("LOCK TABLE big_ledger IN ACCESS EXCLUSIVE MODE")
        worker = in_thread(backup_runs.run_backup, backup.pk)
        wait_for(lambda: Backup.objects.get(pk=backup.pk).status == Backup.RUNNING)
        time.sleep(0.5)
        with psycopg.connect(**database, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO measurements (id, taken, value) SELECT g, '2026-05-01', g FROM generate_series(1, 50) g"
            )
    worker.join(timeout=60)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error

    restore = verify(backup, "restore")

    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == backup.table_counts
    with psycopg.connect(**database) as conn:
        now = conn.execute("SELECT count(*) FROM measurements_2026").fetchone()[0]
    assert now == backup.table_counts["public.measurements_2026"] + 50


def test_a_flipped_byte_in_the_local_copy_is_named_and_the_restore_falls_back(plan, tmp_path, pg_server):
    backup = backup_of(plan)
    path = local_path(backup, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    check = verify(backup, "checksum")
    assert check.status == "failed"
    # The intact copy in S3 gives the first bad byte itself, not the start of its segment.
    assert check.summary.startswith(
        f"Copy on Local disk ({local_path(backup, tmp_path)}) is damaged at byte "
        f"{len(data) // 2}: it differs from the intact copy on Off-site S3 first at byte "
        f"{len(data) // 2}; the stored bytes differ from those written (SHA-256 "
    )
    assert "Copy on Off-site S3" not in check.summary
    bad = next(c for c in check.evidence["copies"] if c["destination"] == "Local disk")
    assert (bad["offset"], bad["compared_with"]) == (len(data) // 2, "Off-site S3")

    restore = verify(backup, "restore")
    assert restore.status == "passed", restore.summary
    assert restore.summary.startswith("Copy on Local disk is damaged")
    assert "restored from Off-site S3 instead" in restore.summary
    assert restore.copy.destination.name == "Off-site S3"
    assert scratch_databases(pg_server) == []


def test_a_flipped_byte_in_the_s3_object_is_named(plan, s3_bucket):
    backup = backup_of(plan)
    client = s3.client(s3_bucket["endpoint_url"])
    key = "strongroom/" + backup.object_key
    data = bytearray(client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read())
    data[-40] ^= 0x80
    client.put_object(Bucket=s3_bucket["bucket"], Key=key, Body=bytes(data))

    check = verify(backup, "checksum")

    assert check.status == "failed"
    assert check.summary.startswith("Copy on Off-site S3 (s3://") and "Copy on Local disk" not in check.summary
    assert f"is damaged at byte {len(data) - 40}: it differs from the intact copy on Local disk" in check.summary
    assert Copy.objects.get(backup=backup, destination__name="Off-site S3").verified_at is not None  # from before


def test_truncation_by_one_segment_is_detected_and_no_copy_means_no_restore(plan, tmp_path, s3_bucket, pg_server):
    backup = backup_of(plan)
    path = local_path(backup, tmp_path)
    data = path.read_bytes()
    header_and_rest = len(data) % (SEGMENT + 16) or SEGMENT + 16
    path.write_bytes(data[:-header_and_rest] if len(data) > header_and_rest else data[: len(data) - (len(data) - 200)])
    s3.client(s3_bucket["endpoint_url"]).delete_object(
        Bucket=s3_bucket["bucket"], Key="strongroom/" + backup.object_key
    )

    check = verify(backup, "checksum")
    assert check.status == "failed"
    # The size is said first, not a damaged segment.
    left = path.stat().st_size
    bad = next(c for c in check.evidence["copies"] if c["destination"] == "Local disk")
    assert bad["offset"] == left and bad["segment_start"] is None
    assert (
        f"is damaged at byte {left}: the object has {left} bytes; {len(data)} were stored: it is cut short"
        in check.summary
    )

    restore = verify(backup, "restore")
    assert restore.status == "failed"
    assert restore.summary.startswith("No copy could be restored: Local disk:")
    assert scratch_databases(pg_server) == []


def header_length(data):
    return crypto.read_header(data)[1]


def test_a_flipped_byte_in_the_only_copy_is_placed_in_its_segment(database, tmp_path):
    plan = make_plan(pg_source(database), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = backup_of(plan)
    path = local_path(backup, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    check = verify(backup, "checksum")

    # No other copy to compare with: the segment that fails authentication is what is known.
    start, length = header_length(data), min(len(data) - header_length(data), SEGMENT + 16)
    assert check.status == "failed"
    assert check.summary.startswith(
        f"Copy on Local disk ({path}) is damaged within the segment starting at byte "
        f"{start} (segment length {length}): the stored bytes differ"
    )
    [bad] = check.evidence["copies"]
    assert (bad["offset"], bad["segment_start"], bad["segment_length"]) == (None, start, length)


def test_a_flipped_byte_in_an_unencrypted_copy_is_found_by_comparing_copies(database, tmp_path, s3_bucket):
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    plan = make_plan(pg_source(database), destinations, encrypt=False, verify_new_backups=False)
    backup = backup_of(plan)
    client = s3.client(s3_bucket["endpoint_url"])
    key = "strongroom/" + backup.object_key
    data = bytearray(client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read())
    middle = len(data) // 2 + 7
    data[middle] ^= 0x20
    client.put_object(Bucket=s3_bucket["bucket"], Key=key, Body=bytes(data))

    check = verify(backup, "checksum")

    assert check.status == "failed"
    assert check.summary.startswith(
        f"Copy on Off-site S3 (s3://{s3_bucket['bucket']}/strongroom/{backup.object_key}) "
        f"is damaged at byte {middle}: it differs from the intact copy on Local disk "
        f"first at byte {middle}; "
    )
    assert check.summary.count("Copy on ") == 1


def test_bytes_appended_to_a_copy_are_a_size_mismatch(plan, s3_bucket):
    backup = backup_of(plan)
    client = s3.client(s3_bucket["endpoint_url"])
    key = "strongroom/" + backup.object_key
    data = client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket["bucket"], Key=key, Body=data + b"\0" * 10)

    check = verify(backup, "checksum")

    assert check.status == "failed"
    assert check.summary == (
        f"Copy on Off-site S3 (s3://{s3_bucket['bucket']}/strongroom/{backup.object_key}) is damaged "
        f"at byte {len(data)}: the object has {len(data) + 10} bytes; {len(data)} were stored: "
        "10 bytes were added after its end"
    )


def test_a_missing_master_key_is_a_clear_error_and_leaves_nothing(plan, pg_server):
    backup = backup_of(plan)
    path = keyring.key_path(backup.key_id)
    hidden = path.with_suffix(".away")
    path.rename(hidden)
    keyring._read_key.cache_clear()
    try:
        restore = verify(backup, "restore")
        check = verify(backup, "checksum")
    finally:
        hidden.rename(path)
    assert restore.status == "failed"
    assert restore.summary == f"Master key {backup.key_id} is not in {path.parent}"
    assert (check.status, check.summary) == ("failed", restore.summary)
    assert scratch_databases(pg_server) == []


def test_a_cancelled_restore_drops_its_scratch_database(pg_database, tmp_path, pg_server):
    create_tricky_database(pg_database, big_rows=100_000)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = backup_of(plan)
    # A slow disk: the stored object becomes a pipe this test feeds by hand.
    path = local_path(backup, tmp_path)
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    job = Verification.objects.create(backup=backup, source=backup.source, kind="restore")
    worker = in_thread(verification.run_verification, job.pk)

    with open(path, "wb") as pipe:
        pieces = [data[i : i + 16384] for i in range(0, len(data), 16384)]
        pipe.write(pieces[0])
        pipe.flush()
        wait_for(lambda: scratch_databases(pg_server), timeout=30)
        verification.cancel_verification("test", Verification.objects.get(pk=job.pk))
        for piece in pieces[1:]:
            if not worker.is_alive():
                break
            try:
                pipe.write(piece)
                pipe.flush()
            except BrokenPipeError:
                break
            time.sleep(0.05)
    worker.join(timeout=60)

    job.refresh_from_db()
    assert job.status == "cancelled", job.summary
    assert scratch_databases(pg_server) == []
    # The cancelled reader closed the stored object at once: left to the garbage
    # collector, it once held the pipe open, and the writing above blocked for ever.
    assert not [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path)]


def test_a_sqlite_backup_restores_with_integrity_check(tmp_path, settings):
    import sqlite3

    scratch_files = NewFiles(Path(settings.DATA_DIR) / "tmp", "strongroom_verify_*")
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n} ✓",) for n in range(500)])
    source = services.save_source(
        "test",
        __import__("catalog.models").models.Source(name="App", engine="sqlite", sqlite_path=str(path), port=None),
    )
    plan = make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite")
    backup = backup_of(plan)

    restore = verify(backup, "restore")

    assert restore.status == "passed", restore.summary
    assert restore.evidence["integrity_check"] == "ok" and restore.evidence["rows"] == {"notes": 500}
    assert scratch_files() == []


def test_the_verify_command_passes_and_fails_with_its_exit_status(plan, tmp_path):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    backup = backup_of(plan)
    out = StringIO()
    call_command("verify", "--plan", plan.name, stdout=out)
    assert f"Backup #{backup.pk} checksum: passed" in out.getvalue()
    assert f"Backup #{backup.pk} test restore: passed" in out.getvalue()
    assert backup.verifications.filter(trigger="command").count() == 2

    path = local_path(backup, tmp_path)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 1 verifications did not pass"):
        call_command("verify", "--backup", str(backup.pk), "--kind", "checksum", "--json", stdout=out)
    report = __import__("json").loads(out.getvalue())
    assert report[0]["status"] == "failed" and "Copy on Local disk" in report[0]["summary"]


def test_two_verifications_of_one_source_never_run_at_once(plan):
    backup = backup_of(plan)
    first = verification.create_verification("test", backup, "restore", enqueue_it=False)
    second = verification.create_verification("test", backup, "checksum", enqueue_it=False)
    assert verification.claim_verification(first.pk) == "claimed"
    assert verification.claim_verification(second.pk) == "busy"
    assert Verification.objects.get(pk=second.pk).status == "queued"
    with pytest.raises(services.Refused, match="already queued or running"):
        verification.create_verification("test", backup, "restore")


def test_the_policy_queues_weekly_restore_tests_and_the_dashboard_tells(plan, admin_client):
    from datetime import timedelta

    from django.utils import timezone

    from catalog import tasks

    backup = backup_of(plan)
    page = admin_client.get("/").content.decode()
    # None has passed yet, but the plan was made just now: not overdue before its week has passed.
    assert "Last verified restore" in page and "overdue" not in page

    result = tasks.tick()
    restore = Verification.objects.get(kind="restore")
    assert result["queued_verifications"] == [restore.pk] and restore.trigger == "policy"
    assert restore.status == "passed", restore.summary
    assert tasks.tick()["queued_verifications"] == []  # not again within the week
    page = admin_client.get("/").content.decode()
    assert "overdue" not in page and restore.get_absolute_url() in page

    Verification.objects.filter(pk=restore.pk).update(restore_seconds=125.0)
    plan.source.rto_minutes = 2
    plan.source.save()
    page = admin_client.get("/").content.decode().replace("\xa0", " ")
    assert "2 min 05 s" in page and "over the 2 min RTO" in page

    Verification.objects.filter(pk=restore.pk).update(
        created_at=timezone.now() - timedelta(days=8), finished_at=timezone.now() - timedelta(days=8)
    )
    assert "overdue" in admin_client.get("/").content.decode()
    assert len(tasks.tick()["queued_verifications"]) == 1
    assert backup.verifications.filter(kind="restore").count() == 2


def test_verification_pages(plan, admin_client, auditor_client):
    backup = backup_of(plan)
    response = admin_client.post(f"/backups/{backup.pk}/test-restore/")
    job = Verification.objects.get(kind="restore")
    assert response["Location"] == job.get_absolute_url()
    page = admin_client.get(job.get_absolute_url()).content.decode()
    assert "Restore took" in page and "restored vs. counted in the backup's snapshot" in page
    assert "public.big_ledger" in page and "dropped" in page
    listing = auditor_client.get("/verifications/?kind=restore").content.decode()
    assert job.get_absolute_url() in listing and "Test restore" in listing
    assert auditor_client.post(f"/backups/{backup.pk}/verify/").status_code == 403
    assert "Test restore</button>" not in auditor_client.get(backup.get_absolute_url()).content.decode()


def test_a_wrong_master_key_is_a_clear_error_and_leaves_nothing(plan, pg_server):
    from catalog.engine import crypto

    backup = backup_of(plan)
    path = keyring.key_path(backup.key_id)
    original = path.read_bytes()
    path.unlink()
    crypto.write_key_file(str(path), backup.key_id, crypto.generate_master_key())  # same id, other bytes
    keyring._read_key.cache_clear()
    try:
        restore = verify(backup, "restore")
        check = verify(backup, "checksum")
    finally:
        path.write_bytes(original)
        keyring._read_key.cache_clear()
    assert restore.status == check.status == "failed"
    for summary in (restore.summary, check.summary):
        assert "wrong master key" in summary or "is it the right key?" in summary, summary
    assert scratch_databases(pg_server) == []


def test_a_verification_whose_worker_died_is_failed_and_its_scratch_database_dropped(plan, pg_server):
    from datetime import timedelta

    from django.utils import timezone

    from catalog import tasks
    from catalog.engine import dumpers, restorers

    backup = backup_of(plan)
    name = restorers.scratch_name(backup.pk)
    restorers.ScratchDatabase(dumpers.normalize_conninfo(backup.source.conninfo()), name).__enter__()
    stale = timezone.now() - timedelta(minutes=10)
    job = Verification.objects.create(
        backup=backup,
        source=backup.source,
        kind="restore",
        status="running",
        started_at=stale,
        heartbeat_at=stale,
        evidence={"scratch_database": name},
    )
    assert scratch_databases(pg_server) == [name]

    assert tasks.tick()["swept_verifications"] == [job.pk]

    job.refresh_from_db()
    assert job.status == "failed" and "stopped responding" in job.summary
    assert scratch_databases(pg_server) == []


def test_a_plain_sql_backup_restores_through_psql(database, tmp_path, pg_server):
    plan = make_plan(
        pg_source(database),
        [local_destination(tmp_path / "disk")],
        format="plain",
        compression="gzip",
        encrypt=False,
        verify_new_backups=False,
    )
    backup = backup_of(plan)

    restore = verify(backup, "restore")

    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == backup.table_counts and restore.evidence["table_of_contents"] is None
    assert "schema objects" not in restore.summary
    assert scratch_databases(pg_server) == []


def test_restore_tests_can_use_a_separate_verification_server(plan, password_server, settings):
    server = {**password_server, "dbname": "postgres"}
    settings.VERIFY_SERVER_URL = (
        f"postgresql://{server['user']}:{server['password']}@{server['host']}:{server['port']}/postgres"
    )
    backup = backup_of(plan)

    restore = verify(backup, "restore")

    assert restore.status == "passed", restore.summary
    assert restore.evidence["server"] == f"127.0.0.1:{server['port']}"
    assert server["password"] not in str(restore.evidence) + restore.log + restore.summary
    assert scratch_databases(server) == []


def test_only_verifications_that_found_their_source_busy_are_handed_out_again(plan):
    from datetime import timedelta

    from django.utils import timezone

    backup = backup_of(plan)
    running = verification.create_verification("test", backup, "restore", enqueue_it=False)
    waiting = verification.create_verification("test", backup, "checksum", enqueue_it=False)
    assert verification.claim_verification(running.pk) == "claimed"
    assert verification.claim_verification(waiting.pk) == "busy"
    later = timezone.now() + timedelta(minutes=2)
    Verification.objects.filter(pk=running.pk).update(heartbeat_at=later)  # still alive then

    assert verification.redispatch_waiting(now=later) == [waiting.pk]
    # The handed-out task found the source still busy and marked it afresh: it is
    # handed out again only a minute after that, so copies never pile up in the queue.
    assert Verification.objects.get(pk=waiting.pk).status == "queued"
    assert verification.redispatch_waiting(now=timezone.now() + timedelta(seconds=30)) == []
    fresh = Verification.objects.create(backup=backup, source=backup.source, kind="checksum")  # never tried yet
    assert fresh.pk not in verification.redispatch_waiting(now=later)  # never found busy: left in the queue
