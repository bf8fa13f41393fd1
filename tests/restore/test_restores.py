"""Restores against a real PostgreSQL and a real S3 server: full into a new
database, tables replaced in place with a safety backup, preview and merge,
and the refusals that leave the target untouched."""

import sqlite3

import psycopg
import pytest

from catalog import backup_runs, keyring, services
from catalog.engine import restorers
from catalog.models import Backup, RestoreServer
from catalog.services import Refused
from restore import services as restores
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg
from tests.harness.sample_db import schema_dump, table_fingerprints
from tests.support import execute_sql, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backup(source_db, tmp_path, s3_bucket):
    plan = make_plan(
        pg_source(source_db),
        [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)],
        verify_new_backups=False,
        retention_mode="last",
        keep_last=20,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def quoted(table):
    """The key table_fingerprints uses: "Inventory"."StockItem", public.big_ledger."""
    return ".".join(part if part == part.lower() else f'"{part}"' for part in table.split("."))


def fingerprints(conninfo, tables):
    return fingerprints_of(table_fingerprints(conninfo), tables)


@pytest.mark.parametrize("jobs", [4, 1])
def test_a_full_restore_into_a_new_database_is_identical(source_db, backup, jobs, settings):
    settings.RESTORE_JOBS = jobs  # 1: streamed into one pg_restore, no temporary file
    before_schema, before_data = schema_dump(source_db), table_fingerprints(source_db)
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id < 100")  # later changes must not matter
    name = restores.suggest_database_name(backup)

    job = restore_now(backup, target="new", database=name)

    try:
        assert job.status == "succeeded", job.summary
        restored = {**source_db, "dbname": name}
        assert schema_dump(restored) == before_schema and table_fingerprints(restored) == before_data
        assert [s["name"] for s in job.steps] == ["checks", "fetch, verify and restore", "apply", "post-checks"]
        assert job.report["copy"] == "Local disk" and job.safety_backup is None
        assert job.report["table_of_contents"]["tables"] > 0
        assert not restores.spool_dir(job).exists()
    finally:
        pg.drop_database(name)


def test_two_tables_replaced_in_place_with_a_safety_backup_that_restores_the_previous_state(source_db, backup):
    tables = ["public.big_ledger", "Inventory.StockItem"]
    at_backup = table_fingerprints(source_db)
    execute_sql(
        source_db, 'DELETE FROM big_ledger WHERE id <= 10; UPDATE "Inventory"."StockItem" SET note = \'changed\''
    )
    execute_sql(source_db, "INSERT INTO measurements VALUES (99999, '2026-03-03', 1)")
    changed = table_fingerprints(source_db)

    job = restore_now(
        backup,
        target="existing",
        database=source_db["dbname"],
        tables=tables,
        mode="full",
        confirmed_name=source_db["dbname"],
    )

    assert job.status == "succeeded", job.summary
    now = table_fingerprints(source_db)
    assert fingerprints_of(now, tables) == fingerprints_of(at_backup, tables)
    assert now["public.measurements_2026"] == changed["public.measurements_2026"]  # not chosen: untouched
    with psycopg.connect(**source_db) as conn:
        assert conn.execute("SELECT count(*) FROM big_ledger").fetchone()[0] == 2000
        assert conn.execute('SELECT count(*) FROM "Inventory"."StockItem" WHERE note = \'changed\'').fetchone()[0] == 0
    safety = job.safety_backup
    assert safety.status == "succeeded" and safety.pinned and safety.label == f"before-restore-{job.pk}"

    back = restore_now(safety, target="new", database="safety_check_db")
    try:
        assert back.status == "succeeded", back.summary
        assert fingerprints({**source_db, "dbname": "safety_check_db"}, tables) == fingerprints_of(changed, tables)
    finally:
        pg.drop_database("safety_check_db")


def fingerprints_of(everything, tables):
    return {t: everything[quoted(t)] for t in tables}


def test_preview_reports_exactly_what_changed_and_changes_nothing(source_db, backup):
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id IN (1, 2, 3)")
    execute_sql(source_db, "UPDATE big_ledger SET memo = 'edited' WHERE id IN (10, 11)")
    execute_sql(source_db, "INSERT INTO big_ledger VALUES (50001, 'acct-x', 1, 'new'), (50002, 'acct-y', 2, 'new')")
    before = schema_dump(source_db), table_fingerprints(source_db)

    job = restore_now(
        backup, target="existing", database=source_db["dbname"], tables=["public.big_ledger"], mode="preview"
    )

    assert job.status == "succeeded", job.summary
    (report,) = job.report["tables"]
    assert (report["in_backup"], report["in_target"]) == (2000, 1999)
    assert (report["only_in_backup"], report["only_in_target"], report["differ"]) == (3, 2, 2)
    assert (schema_dump(source_db), table_fingerprints(source_db)) == before
    assert job.safety_backup is None and "Nothing was changed" in job.summary


def test_merge_inserts_exactly_the_deleted_rows_and_keeps_changed_ones(source_db, backup):
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id IN (1, 2, 3)")
    execute_sql(source_db, "UPDATE big_ledger SET memo = 'edited' WHERE id = 10")

    job = restore_now(
        backup,
        target="existing",
        database=source_db["dbname"],
        tables=["public.big_ledger"],
        mode="merge",
        confirmed_name=source_db["dbname"],
    )

    assert job.status == "succeeded", job.summary
    assert job.report["inserted"] == {"public.big_ledger": 3}
    with psycopg.connect(**source_db) as conn:
        assert conn.execute("SELECT count(*) FROM big_ledger").fetchone()[0] == 2000
        assert conn.execute("SELECT memo FROM big_ledger WHERE id = 10").fetchone()[0] == "edited"
        assert conn.execute("SELECT count(*) FROM big_ledger WHERE id IN (1, 2, 3)").fetchone()[0] == 3


def test_refusals_say_why_and_leave_the_target_untouched(source_db, backup):
    before = table_fingerprints(source_db)
    with pytest.raises(Refused, match="already exists"):
        restore_now(backup, target="new", database=source_db["dbname"])
    with pytest.raises(Refused, match="Type the database's name"):
        restore_now(backup, target="existing", database=source_db["dbname"], mode="full", confirmed_name="wrong")
    with pytest.raises(Refused, match="has no table public.nope"):
        restore_now(backup, target="new", database="x_db", tables=["public.nope"])

    # A whole-database replace with someone connected lists them and changes nothing.
    with psycopg.connect(**source_db, application_name="reporting-app"):
        job = restore_now(
            backup, target="existing", database=source_db["dbname"], mode="full", confirmed_name=source_db["dbname"]
        )
    assert job.status == "failed" and "active connection" in job.summary and "reporting-app" in job.summary
    assert job.safety_backup is None

    path = keyring.key_path(backup.key_id)
    path.rename(path.with_suffix(".away"))
    keyring._read_key.cache_clear()
    try:
        with pytest.raises(Refused, match=f"Master key {backup.key_id} is not in"):
            restore_now(backup, target="new", database="y_db")
    finally:
        path.with_suffix(".away").rename(path)
    assert table_fingerprints(source_db) == before
    assert RestoreJob.objects.filter(status="failed").count() == 1


def test_the_restore_command_runs_a_drill_and_fails_loudly(backup, source_db):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    call_command("restore", "--backup", str(backup.pk), "--new-database", "drill_db", stdout=out)
    try:
        assert "succeeded: Restored into the new database drill_db." in out.getvalue()
    finally:
        pg.drop_database("drill_db")
    with pytest.raises(CommandError, match="Type the database's name"):
        call_command("restore", "--backup", str(backup.pk), "--into-source", "--mode", "full", stdout=StringIO())


def test_a_target_server_older_than_the_dump_is_refused(source_db, backup):
    Backup.objects.filter(pk=backup.pk).update(server_version="99.1")
    backup.refresh_from_db()
    name = "never_created_db"

    job = restore_now(backup, target="new", database=name)

    assert job.status == "failed"
    assert "older than the 99.1 the backup was taken from" in job.summary
    with psycopg.connect(**{**source_db, "dbname": "postgres"}) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    assert [s["status"] for s in job.steps] == ["failed"]


def test_a_cancelled_restore_changes_nothing(source_db, backup):
    before = table_fingerprints(source_db)
    job = restores.request_restore(
        "test",
        backup,
        target="existing",
        database=source_db["dbname"],
        mode="full",
        tables=["public.big_ledger"],
        confirmed_name=source_db["dbname"],
        enqueue=False,
    )
    restores.cancel_restore("test", job)
    assert restores.run_restore(job.pk) is None  # a late delivery does nothing
    job.refresh_from_db()
    assert job.status == "cancelled" and "nothing was changed" in job.summary

    running = restores.request_restore(
        "test",
        backup,
        target="existing",
        database=source_db["dbname"],
        mode="full",
        tables=["public.big_ledger"],
        confirmed_name=source_db["dbname"],
        enqueue=False,
    )
    RestoreJob.objects.filter(pk=running.pk).update(cancel_requested=True)  # as if asked while it ran
    running = restores.run_restore(running.pk)
    assert running.status == "cancelled" and "before “checks”" in running.summary
    assert table_fingerprints(source_db) == before


def test_not_enough_disk_for_the_temporary_file_is_refused(source_db, backup, tmp_path, settings):
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], check=True)
    try:
        settings.RESTORE_TMP_DIR = tiny
        job = restore_now(backup, target="new", database="no_room_db")
    finally:
        subprocess.run(["umount", str(tiny)], check=True)
    assert job.status == "failed" and "Not enough free disk in" in job.summary
    with psycopg.connect(**{**source_db, "dbname": "postgres"}) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'no_room_db'").fetchone()


def test_a_new_database_can_go_to_a_registered_restore_server(backup, source_db, password_server):
    server = {**password_server, "dbname": "postgres"}
    standby = services.save_restore_server(
        "test",
        RestoreServer(name="Standby", host=server["host"], port=server["port"], user=server["user"]),
        secrets={"password": server["password"]},
    )
    before = table_fingerprints(source_db)

    job = restore_now(backup, target="new", database="elsewhere_db", restore_server=standby)

    assert job.status == "succeeded", job.summary
    assert "on server Standby" in job.describe()
    assert table_fingerprints({**server, "dbname": "elsewhere_db"}) == before
    assert server["password"] not in str(job.report) + job.log + str(job.steps)


@pytest.fixture
def sqlite_backup(tmp_path):
    from catalog.models import Source

    path = tmp_path / "app" / "app.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE TABLE tags (name TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {n} ✓",) for n in range(300)])
        conn.executemany("INSERT INTO tags VALUES (?)", [("a",), ("b",)])
    conn.close()
    source = services.save_source("test", Source(name="App", engine="sqlite", sqlite_path=str(path), port=None))
    plan = make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite", verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup, path


def sqlite_rows(path, query):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_sqlite_restores_to_a_new_file_and_chosen_tables_in_place(sqlite_backup):
    backup, path = sqlite_backup
    name = restores.suggest_database_name(backup)
    job = restore_now(backup, target="new", database=name)
    assert job.status == "succeeded", job.summary
    assert sqlite_rows(path.parent / name, "SELECT count(*) FROM notes") == [(300,)]

    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM notes WHERE id <= 10")
        conn.execute("DELETE FROM tags")
    conn.close()
    job = restore_now(backup, target="existing", database="app.sqlite3", tables=["notes"], confirmed_name="app.sqlite3")
    assert job.status == "succeeded", job.summary
    assert sqlite_rows(path, "SELECT count(*) FROM notes") == [(300,)]
    assert sqlite_rows(path, "SELECT count(*) FROM tags") == [(0,)]  # not chosen: untouched
    assert job.safety_backup is not None and job.safety_backup.pinned
    assert not list(path.parent.glob(".strongroom-restore-*"))


@pytest.mark.parametrize("jobs", [4, 1])
def test_a_damaged_local_copy_falls_back_to_s3_and_says_so(source_db, backup, tmp_path, jobs, settings):
    settings.RESTORE_JOBS = jobs  # 1: the damage is found while pg_restore is already reading
    path = tmp_path / "disk" / backup.object_key
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    name = "from_s3_db"

    job = restore_now(backup, target="new", database=name)

    try:
        assert job.status == "succeeded", job.summary
        assert job.report["copy"] == "Off-site S3"
        assert job.report["skipped_copies"][0].startswith("Local disk: ")
        fetch = next(step for step in job.steps if step["name"] == "fetch, verify and restore")
        assert "from Off-site S3 (skipped: Local disk:" in fetch["detail"]
        assert table_fingerprints({**source_db, "dbname": name}) == table_fingerprints(source_db)
        assert not restorers.database_exists(source_db, job.report["scratch_database"])
    finally:
        pg.drop_database(name)


def test_a_restore_whose_worker_died_is_failed_and_its_scratch_database_dropped(source_db, backup):
    from datetime import timedelta

    from django.utils import timezone

    from catalog import tasks
    from catalog.engine import dumpers, restorers

    name = restorers.scratch_name(backup.pk)
    restorers.ScratchDatabase(dumpers.normalize_conninfo(backup.source.conninfo()), name).__enter__()
    stale = timezone.now() - timedelta(minutes=10)
    job = RestoreJob.objects.create(
        backup=backup,
        source=backup.source,
        target_database="x",
        status="running",
        started_at=stale,
        heartbeat_at=stale,
        report={"scratch_database": name},
    )

    assert tasks.tick()["swept_restores"] == [job.pk]

    job.refresh_from_db()
    assert job.status == "failed" and "stopped responding" in job.summary
    with psycopg.connect(**{**source_db, "dbname": "postgres"}) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
