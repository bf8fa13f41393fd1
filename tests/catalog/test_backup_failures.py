"""Each way a backup can fail ends it as `failed` with a one-line reason, leaves
no object behind, and the next run (once the cause is fixed) succeeds."""

import logging
import time
import uuid

import psycopg
import pytest

from catalog import backup_runs, services
from catalog.models import AuditEvent, Backup, Copy
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3, s3_auth
from tests.harness.disk import tiny_disk  # noqa: F401 — a fixture
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under, in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = pg.TEST_PASSWORD


@pytest.fixture
def small_database(pg_database):
    create_tricky_database(pg_database, big_rows=100)
    return pg_database


def run(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    return backup


def assert_failed_cleanly(backup, reason, directory=None):
    assert backup.status == Backup.FAILED
    assert reason in backup.error
    assert "\n" not in backup.error
    assert not backup.copies.filter(status=Copy.DURABLE).exists()
    if directory is not None:
        assert files_under(directory) == []


def test_it_fails_on_a_wrong_password_and_keeps_it_secret(password_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    source = pg_source({**password_server, "dbname": "postgres"}, password="wrong-" + SECRET)
    plan = make_plan(source, [local_destination(tmp_path)])

    backup = run(plan)

    assert_failed_cleanly(backup, "Password authentication failed", tmp_path)
    everything = backup.error + backup.log + caplog.text + str(list(AuditEvent.objects.values()))
    assert SECRET not in everything

    services.save_source("test", source, changed_fields=["password"], secrets={"password": SECRET})
    assert run(plan).status == Backup.SUCCEEDED


def test_it_fails_when_the_host_is_unreachable(small_database, tmp_path):
    plan = make_plan(pg_source({**small_database, "port": pg.free_port()}), [local_destination(tmp_path)])
    assert_failed_cleanly(run(plan), "Cannot reach", tmp_path)


def test_it_fails_when_the_database_does_not_exist(pg_server, tmp_path):
    plan = make_plan(pg_source({**pg_server, "dbname": "no_such_db_here"}), [local_destination(tmp_path)])
    assert_failed_cleanly(run(plan), "does not exist", tmp_path)


def test_it_fails_when_the_bucket_is_missing_and_then_recovers(small_database, s3_bucket):
    destination = s3_destination({**s3_bucket, "bucket": "no-such-bucket-" + uuid.uuid4().hex[:6]})
    plan = make_plan(pg_source(small_database), [destination])

    assert_failed_cleanly(run(plan), "does not exist")

    destination.bucket = s3_bucket["bucket"]
    services.save_destination("test", destination, changed_fields=["bucket"])
    backup = run(plan)
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert len(s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"])) == 3  # object, manifest, globals


def test_it_fails_when_s3_denies_access(small_database):
    process, endpoint_url = s3_auth.start_auth_server()
    try:
        key_id, secret = s3_auth.bucket_with_powerless_user(endpoint_url, "locked")
        bucket = {
            "endpoint_url": endpoint_url,
            "bucket": "locked",
            "region": "us-east-1",
            "access_key_id": key_id,
            "secret_access_key": secret,
        }
        plan = make_plan(pg_source(small_database), [s3_destination(bucket)])
        backup = run(plan)
    finally:
        process.terminate()
        process.wait()
    assert_failed_cleanly(backup, "denied")
    assert secret not in backup.error + backup.log


def test_it_is_partial_when_one_destination_fails(small_database, s3_bucket, tmp_path):
    broken = s3_destination({**s3_bucket, "bucket": "missing-" + uuid.uuid4().hex[:6]})
    plan = make_plan(pg_source(small_database), [local_destination(tmp_path), broken])

    backup = run(plan)

    assert backup.status == Backup.PARTIAL
    assert backup.copies.get(destination=broken).status == Copy.FAILED
    assert backup.copies.exclude(destination=broken).get().status == Copy.DURABLE
    assert "missing-" in backup.error


def test_it_fails_when_the_disk_is_full(pg_database, tiny_disk, tmp_path):
    create_tricky_database(pg_database, big_rows=50_000)
    destination = local_destination(tiny_disk)
    plan = make_plan(pg_source(pg_database), [destination], compression="none")

    assert_failed_cleanly(run(plan), "Disk full", tiny_disk)

    destination.path = str(tmp_path / "roomy")
    services.save_destination("test", destination, changed_fields=["path"])
    assert run(plan).status == Backup.SUCCEEDED


def test_it_cancels_a_running_backup_and_removes_partial_objects(pg_database, s3_bucket, tmp_path):
    create_tricky_database(pg_database, big_rows=1000)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path), s3_destination(s3_bucket)])
    backup = backup_runs.create_backup("test", plan)

    # Hold a lock that pg_dump must wait for, so the backup is caught mid-run.
    with psycopg.connect(**pg_database) as blocker:
        blocker.execute("LOCK TABLE big_ledger IN ACCESS EXCLUSIVE MODE")
        worker = in_thread(backup_runs.run_backup, backup.pk)
        wait_for(lambda: Backup.objects.get(pk=backup.pk).status == Backup.RUNNING)
        time.sleep(1)
        backup_runs.cancel_backup("test", Backup.objects.get(pk=backup.pk))
        worker.join(timeout=30)
        assert not worker.is_alive()
        # pg_dump and the row counting running beside it on the snapshot both waited on the lock; both are gone.
        others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        with psycopg.connect(**pg_database, autocommit=True) as watcher:  # activity as of now, not the lock's snapshot
            wait_for(lambda: watcher.execute(others).fetchone()[0] == 1)  # the blocker alone

    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert files_under(tmp_path) == []
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert AuditEvent.objects.filter(action="backup.cancel", object_id=str(backup.pk)).exists()


def test_it_cancels_a_queued_backup_at_once(small_database, tmp_path):
    plan = make_plan(pg_source(small_database), [local_destination(tmp_path)])
    backup = backup_runs.create_backup("test", plan)

    backup_runs.cancel_backup("test", backup)
    assert backup_runs.run_backup(backup.pk) is None  # a late delivery does nothing

    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert files_under(tmp_path) == []


def install_old_pg_dump(directory, settings):
    """Stands in for an old client install: only its --version answer matters."""
    directory.mkdir(exist_ok=True)
    old_pg_dump = directory / "pg_dump"
    old_pg_dump.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old_pg_dump.chmod(0o755)
    settings.PG_DUMP = str(old_pg_dump)


def test_connection_test_says_when_pg_dump_is_too_old(pg_server, tmp_path, settings):
    install_old_pg_dump(tmp_path / "bin", settings)

    ok, message = services.test_source(pg_source({**pg_server, "dbname": "postgres"}))

    assert not ok
    assert message.startswith("pg_dump 9.6.24 is older than the server (")
    assert "install a newer PostgreSQL client" in message


def test_a_backup_with_a_too_old_pg_dump_fails_before_writing(pg_server, tmp_path, settings):
    install_old_pg_dump(tmp_path / "bin", settings)
    target = tmp_path / "backups"
    plan = make_plan(pg_source({**pg_server, "dbname": "postgres"}), [local_destination(target)])
    assert_failed_cleanly(run(plan), "older than the server", target)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_a_missing_master_key_says_which_key_and_where_it_was_looked_for(small_database, tmp_path, settings, encrypted):
    """Every manifest is signed with the active master key, so without its file
    no backup is possible, encrypted or not: the failure names the key and the
    directory it was looked for in, and leaves nothing behind."""
    from catalog import keyring

    settings.KEY_DIR = tmp_path / "keys"
    plan = make_plan(pg_source(small_database), [local_destination(tmp_path / "vault")], encrypt=encrypted)
    assert run(plan).status == Backup.SUCCEEDED  # makes the master key
    key_id = keyring.active_key()[0]
    keyring.key_path(key_id).rename(tmp_path / "elsewhere.key")
    keyring._read_key.cache_clear()
    stored = files_under(tmp_path / "vault")

    backup = run(plan)

    assert_failed_cleanly(backup, f"Master key {key_id} is not in {settings.KEY_DIR}")
    assert "Unexpected error" not in backup.error and "worker log" not in backup.error
    assert f"{key_id}.key" in backup.error  # the file to put back
    assert files_under(tmp_path / "vault") == stored
