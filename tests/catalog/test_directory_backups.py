"""Plans in pg_dump's directory format: several jobs dump at once, each
finished table's file goes to storage as one tar archive while the others are
still dumped, and the spool on the worker's disk is gone however the backup
ends. Real PostgreSQL, local disk and moto's S3 server."""

import tarfile
from io import BytesIO, StringIO

import psycopg
import pytest
from django.core.management import call_command

from catalog import backup_runs, verification
from catalog.models import Backup, Copy, Verification
from restore import services as restores
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.disk import tmpfs
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import decrypt, files_under, in_thread, restore_now, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OTHER_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"

USER_TABLES = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""


@pytest.fixture
def tricky_database(pg_database):
    create_tricky_database(pg_database, big_rows=30_000)
    return pg_database


def directory_plan(database, destinations, **fields):
    return make_plan(pg_source(database), destinations, format="directory", dump_jobs=3, **fields)


def sessions_left(database):
    with psycopg.connect(**database, autocommit=True) as conn:
        return conn.execute(OTHER_SESSIONS).fetchone()[0]


def test_a_directory_backup_stores_pg_dumps_files_as_one_archive_and_restores_from_s3(
    tricky_database, s3_bucket, tmp_path
):
    at_backup = table_fingerprints(tricky_database)
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)])

    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.object_key.endswith(".dir.tar.zst.enc")
    assert "pg_dump's directory format, 3 jobs" in backup.log
    assert not backup_runs.spool_dir(backup).exists()
    assert sessions_left(tricky_database) == 0
    # What a person gets with the decrypt command alone is pg_dump's directory as a tar.
    stored = tmp_path / "disk" / backup.object_key
    done = decrypt(stored, tmp_path / "dump.tar")
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "dump.tar") as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "dump", filter="data")
    assert names[-1] == "toc.dat" and len(names) == len(set(names)) >= 5  # a file per table with rows, then toc.dat
    assert backup.raw_bytes == (tmp_path / "dump.tar").stat().st_size

    # The local copy is lost: the restore reads the S3 one, unpacks it and runs pg_restore -j.
    stored.unlink()
    new_name = "sr_dir_" + str(backup.pk)
    job = restore_now(backup, target="new", database=new_name)
    try:
        assert job.status == "succeeded", job.summary
        assert table_fingerprints({**tricky_database, "dbname": new_name}) == at_backup
        assert not restores.spool_dir(job).exists()  # the unpacked dump, and its directory
    finally:
        pg.drop_database(new_name)


def test_a_directory_backup_that_fails_downstream_stops_pg_dump_and_leaves_nothing(tricky_database, tmp_path):
    destination = local_destination(tmp_path / "disk")
    with tmpfs(tmp_path / "disk", size="64k"):
        plan = directory_plan(tricky_database, [destination], compression="none")
        backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
        assert files_under(tmp_path / "disk") == []

    assert backup.status == Backup.FAILED and "Disk full" in backup.error
    assert not backup.copies.filter(status=Copy.DURABLE).exists()
    assert not backup_runs.spool_dir(backup).exists()
    wait_for(lambda: sessions_left(tricky_database) == 0)


def test_no_room_for_pg_dumps_files_fails_in_words(tricky_database, tmp_path, settings):
    with tmpfs(tmp_path / "data", size="256k"):
        settings.DATA_DIR = tmp_path / "data"
        plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk")], compression="none")
        backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

        assert backup.status == Backup.FAILED
        assert f"Not enough free disk in {backup_runs.spool_dir(backup)} for pg_dump's files" in backup.error
        assert not backup_runs.spool_dir(backup).exists()
    assert files_under(tmp_path / "disk") == []


def test_a_cancelled_directory_backup_ends_every_job_and_removes_its_files(tricky_database, s3_bucket, tmp_path):
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)])
    backup = backup_runs.create_backup("test", plan)

    with psycopg.connect(**tricky_database) as blocker:
        blocker.execute("LOCK TABLE big_ledger IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
        worker = in_thread(backup_runs.run_backup, backup.pk)
        wait_for(lambda: backup_runs.spool_dir(backup).exists())
        backup_runs.cancel_backup("test", Backup.objects.get(pk=backup.pk))
        worker.join(timeout=30)
        assert not worker.is_alive()
        with psycopg.connect(**tricky_database, autocommit=True) as watcher:
            wait_for(lambda: watcher.execute(OTHER_SESSIONS).fetchone()[0] == 1)  # the blocker alone

    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert not backup_runs.spool_dir(backup).exists()
    assert files_under(tmp_path / "disk") == []
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []


def test_the_sweep_removes_what_a_dead_workers_directory_backup_left_on_disk(tricky_database, tmp_path):
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk")])
    backup = backup_runs.create_backup("test", plan)
    spool = backup_runs.spool_dir(backup)
    spool.mkdir(parents=True)
    (spool / "3358.dat").write_bytes(b"rows of a table")

    backup_runs.remove_dead_run(backup)

    assert not spool.exists()


def test_a_dropped_database_comes_back_under_its_own_name_from_a_directory_backup(
    tricky_database, tmp_path, admin_client
):
    at_backup = table_fingerprints(tricky_database)
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk")])
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    pg.drop_database(tricky_database["dbname"])

    out = StringIO()
    call_command("restore", "--backup", str(backup.pk), "--new-database", tricky_database["dbname"], stdout=out)

    assert "succeeded" in out.getvalue()
    assert table_fingerprints(tricky_database) == at_backup
    # The download is pg_dump's directory as a tar, ready for tar -x and pg_restore -j.
    download = admin_client.post(f"/backups/{backup.pk}/download/")
    assert download.status_code == 200
    assert download["Content-Disposition"].endswith('.dir.tar"')
    with tarfile.open(fileobj=BytesIO(b"".join(download.streaming_content))) as archive:
        assert "toc.dat" in archive.getnames()


def test_the_restore_test_of_a_directory_backup_unpacks_it_beside_its_scratch_database_and_cleans_up(
    tricky_database, tmp_path
):
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk")])
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

    check = verification.run_here(
        verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    )

    assert check.status == Verification.PASSED, check.summary
    assert check.evidence["rows"] == backup.table_counts
    assert not verification.spool_dir(check).exists()
    # A worker that died mid-way leaves the unpacked dump: the sweep's clean-up removes it.
    verification.spool_dir(check).mkdir(parents=True)
    (verification.spool_dir(check) / "toc.dat").write_bytes(b"PGDMP")
    verification.drop_scratch_database(check)
    assert not verification.spool_dir(check).exists()


def test_the_row_counts_are_read_from_pg_dumps_files_and_match_the_tables(tricky_database, tmp_path):
    with psycopg.connect(**tricky_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int, body text)")
        conn.execute("INSERT INTO notes SELECT g, E'multi\\nline ' || g FROM generate_series(1, 777) g")
        conn.execute("CREATE TABLE empty_one (id int)")
        # count(*) of a parent counts its inheritance children's rows too, which are in their own files.
        conn.execute("CREATE TABLE more_notes () INHERITS (notes)")
        conn.execute("INSERT INTO more_notes SELECT g, 'more' FROM generate_series(1, 23) g")
        # A table an extension owns is not in the dump's files: it is counted in SQL.
        conn.execute("CREATE TABLE owned_by_extension (id int)")
        conn.execute("INSERT INTO owned_by_extension SELECT generate_series(1, 12)")
        conn.execute("ALTER EXTENSION plpgsql ADD TABLE owned_by_extension")
        expected = {
            f"{schema}.{table}": conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
            for schema, table in conn.execute(USER_TABLES)
        }
    plan = directory_plan(tricky_database, [local_destination(tmp_path / "disk")])

    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == expected
    assert backup.table_counts["public.notes"] == 800 and backup.table_counts["public.owned_by_extension"] == 12
    with psycopg.connect(**tricky_database, autocommit=True) as conn:  # before the next test's database goes
        conn.execute("ALTER EXTENSION plpgsql DROP TABLE owned_by_extension")
