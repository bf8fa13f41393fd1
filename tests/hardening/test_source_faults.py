"""The source database lets a backup down mid-way: its connection is
terminated by the server (pg_terminate_backend), or the whole server
restarts. The run ends failed with a reason in words, nothing it wrote is
left in any destination, and the next run succeeds and restores the rows."""

import uuid

import psycopg
import pytest

from catalog import backup_runs
from catalog.models import AuditEvent, Backup, Copy
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.sample_db import create_tricky_database, table_fingerprints, throwaway_tricky_database
from tests.support import execute_sql, files_under, in_thread, restore_now, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EXPORT_TABLES = [
    {"schema": "Inventory", "name": "StockItem", "where": ""},
    {"schema": "public", "name": "big_ledger", "where": ""},
]
# A table only the dump itself locks: pg_dump locks the partitioned parent,
# while the row counts taken before it read the partitions alone. An export
# reads big_ledger after StockItem.
BLOCKED = {
    "custom": "LOCK TABLE ONLY measurements IN ACCESS EXCLUSIVE MODE",
    "csv": "LOCK TABLE big_ledger IN ACCESS EXCLUSIVE MODE",
}


@pytest.fixture(scope="module")
def source_db(pg_server):
    """One source for the module: a test that changes it puts it back."""
    with throwaway_tricky_database("sr_test_faults", big_rows=2000) as conninfo:
        yield conninfo


def lock_waiter(conninfo, blocker_pid):
    """(pid, application name) of the backend other than the blocker that
    waits for a lock in the database, or None."""
    with psycopg.connect(**{**conninfo, "dbname": "postgres"}, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity "
            "WHERE datname = %s AND wait_event_type = 'Lock' AND pid <> %s",
            [conninfo["dbname"], blocker_pid],
        ).fetchone()


def terminate(conninfo, pid):
    with psycopg.connect(**{**conninfo, "dbname": "postgres"}, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


def run_while_blocked(conninfo, lock, job, action):
    """Runs `action(job.pk)` in a worker thread while another session holds
    `lock`, so that it waits mid-way; terminates the backend that waits, and
    returns the application name of the backend terminated once the worker
    is done."""
    with psycopg.connect(**conninfo) as blocker:
        blocker.execute(lock)
        blocker_pid = blocker.info.backend_pid
        worker = in_thread(action, job.pk)
        waiter = []
        wait_for(lambda: waiter.append(lock_waiter(conninfo, blocker_pid)) or waiter[-1], timeout=30)
        pid, application = waiter[-1]
        terminate(conninfo, pid)
        worker.join(timeout=60)
        assert not worker.is_alive()
    return application


def source_host(backup):
    return f"{backup.source.host}:{backup.source.port}"


def assert_failed_cleanly(backup, directory, bucket):
    backup.refresh_from_db()
    assert backup.status == Backup.FAILED
    assert f"The server at {source_host(backup)} closed the connection" in backup.error, backup.error
    assert "\n" not in backup.error
    assert set(backup.copies.values_list("status", flat=True)) == {Copy.FAILED}
    assert files_under(directory) == []
    assert s3.all_keys(bucket["endpoint_url"], bucket["bucket"]) == []
    assert s3.open_uploads(bucket["endpoint_url"], bucket["bucket"]) == []
    assert AuditEvent.objects.filter(action="backup.failed", object_id=str(backup.pk)).exists()


def restored_equals(backup, conninfo, expected):
    name = f"sr_faults_{uuid.uuid4().hex[:8]}"
    job = restore_now(backup, target="new", database=name)
    try:
        assert job.status == RestoreJob.SUCCEEDED, job.summary
        restored = table_fingerprints({**conninfo, "dbname": name})
        return {t: restored[t] for t in expected} == expected
    finally:
        execute_sql({**conninfo, "dbname": "postgres"}, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("fmt", ["custom", "csv"])
def test_a_dump_whose_connection_the_source_terminates_fails_cleanly_and_the_next_run_succeeds(
    source_db, tmp_path, s3_bucket, fmt
):
    extra = {"export_tables": EXPORT_TABLES} if fmt == "csv" else {}
    plan = make_plan(
        pg_source(source_db),
        [local_destination(tmp_path), s3_destination(s3_bucket)],
        format=fmt,
        verify_new_backups=False,
        **extra,
    )
    backup = backup_runs.create_backup("test", plan)

    terminated = run_while_blocked(source_db, BLOCKED[fmt], backup, backup_runs.run_backup)

    if fmt == "custom":
        assert terminated == "pg_dump"  # not the connection that took the row counts before it

    assert_failed_cleanly(backup, tmp_path, s3_bucket)
    expected = {
        t: v for t, v in table_fingerprints(source_db).items() if t in ("public.big_ledger", '"Inventory"."StockItem"')
    }
    again = backup_runs.start_backup("test", plan)
    again.refresh_from_db()
    assert again.status == Backup.SUCCEEDED, again.error
    assert restored_equals(again, source_db, expected)


def database_exists(conninfo, name):
    with psycopg.connect(**{**conninfo, "dbname": "postgres"}) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def test_a_restore_whose_target_connection_is_terminated_changes_nothing_and_can_be_run_again(source_db, tmp_path):
    from restore import services as restores

    plan = make_plan(
        pg_source(source_db),
        [local_destination(tmp_path)],
        verify_new_backups=False,
        retention_mode="last",
        keep_last=10,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    at_backup = table_fingerprints(source_db)["public.big_ledger"]
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id <= 10")
    changed = table_fingerprints(source_db)
    job = restores.request_restore(
        "test",
        backup,
        target="existing",
        database=source_db["dbname"],
        tables=["public.big_ledger"],
        mode="full",
        confirmed_name=source_db["dbname"],
        enqueue=False,
    )

    # A reader's share lock: the safety backup may read the table, but the
    # restore's TRUNCATE in the target waits for it, and is terminated there.
    run_while_blocked(source_db, "LOCK TABLE big_ledger IN ACCESS SHARE MODE", job, restores.run_restore)

    job.refresh_from_db()
    assert job.status == RestoreJob.FAILED
    assert f"The server at {source_host(backup)} closed the connection" in job.summary, job.summary
    assert "\n" not in job.summary
    assert [(s["name"], s["status"]) for s in job.steps][-1] == ("apply", "failed")
    assert table_fingerprints(source_db) == changed  # one transaction: nothing of it stayed
    assert not database_exists(source_db, job.report["scratch_database"])
    assert job.safety_backup.status == Backup.SUCCEEDED and job.safety_backup.pinned
    assert AuditEvent.objects.filter(action="restore.failed", object_id=str(job.pk)).exists()

    again = restore_now(
        backup,
        target="existing",
        database=source_db["dbname"],
        tables=["public.big_ledger"],
        mode="full",
        confirmed_name=source_db["dbname"],
    )
    assert again.status == RestoreJob.SUCCEEDED, again.summary
    assert table_fingerprints(source_db)["public.big_ledger"] == at_backup


@pytest.fixture
def own_server():
    """A source server of the test's own, to stop and start."""
    cluster = pg.Cluster()
    try:
        execute_sql({**cluster.server, "dbname": "postgres"}, "CREATE DATABASE inventory")
        conninfo = {**cluster.server, "dbname": "inventory"}
        create_tricky_database(conninfo, big_rows=2000)
        yield cluster, conninfo
    finally:
        cluster.stop()


def test_a_backup_fails_cleanly_when_the_source_server_restarts_and_succeeds_once_it_is_back(
    own_server, tmp_path, s3_bucket
):
    cluster, conninfo = own_server
    plan = make_plan(
        pg_source(conninfo), [local_destination(tmp_path), s3_destination(s3_bucket)], verify_new_backups=False
    )
    backup = backup_runs.create_backup("test", plan)

    blocker = psycopg.connect(**conninfo)
    try:
        blocker.execute(BLOCKED["custom"])  # pg_dump waits here, mid-way
        worker = in_thread(backup_runs.run_backup, backup.pk)
        wait_for(lambda: lock_waiter(conninfo, blocker.info.backend_pid), timeout=30)
        cluster.kill()  # an immediate shutdown, as in a crash or power loss
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        blocker.close()

    backup.refresh_from_db()
    assert backup.status == Backup.FAILED
    assert backup.error.startswith(f"The server at {source_host(backup)} closed the connection"), backup.error
    assert "\n" not in backup.error
    assert files_under(tmp_path) == []
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []

    down = backup_runs.start_backup("test", plan)  # while it is down: refused with the reason
    down.refresh_from_db()
    assert down.status == Backup.FAILED and f"Cannot reach the server at {source_host(down)}" in down.error

    cluster.start()
    expected = table_fingerprints(conninfo)
    again = backup_runs.start_backup("test", plan)
    again.refresh_from_db()
    assert again.status == Backup.SUCCEEDED, again.error
    assert restored_equals(again, conninfo, expected)
