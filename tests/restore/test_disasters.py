"""The restores people buy a backup tool for: the source database dropped,
the whole database replaced while applications are connected, and a worker
killed in the middle of the swap. Real PostgreSQL, a real worker process."""

import shutil
import uuid
from io import StringIO

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

from catalog import backup_runs, services, tasks, verification
from catalog.models import AuditEvent, Backup, RestoreServer, Verification
from restore import services as restores
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import table_fingerprints
from tests.harness.worker import after_heartbeat_timeout, status_of, worker  # noqa: F401 — the fixture
from tests.support import execute_sql, restore_now, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backup(source_db, tmp_path):
    plan = make_plan(
        pg_source(source_db),
        [local_destination(tmp_path / "disk")],
        verify_new_backups=False,
        retention_mode="last",
        keep_last=20,
    )
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def databases_named(server, *names):
    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return [
            row[0]
            for row in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1", [list(names)])
        ]


def database_row(server, name):
    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return conn.execute(
            """SELECT pg_get_userbyid(datdba), datallowconn, datconnlimit, datacl::text[],
                      (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0)
               FROM pg_database d WHERE datname = %s""",
            [name],
        ).fetchone()


# --- the source database is gone -------------------------------------------------------


def test_it_restores_a_backup_whose_source_database_was_dropped(source_db, backup, admin_client):
    at_backup = table_fingerprints(source_db)
    pg.drop_database(source_db["dbname"])
    names = [f"sr_back_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        # The command a DBA reaches for first.
        out = StringIO()
        call_command("restore", "--backup", str(backup.pk), "--new-database", names[0], stdout=out)
        assert f"succeeded: Restored into the new database {names[0]}." in out.getvalue()
        assert table_fingerprints({**source_db, "dbname": names[0]}) == at_backup

        # The wizard: every step answers, and the restore runs (tasks run inline in tests).
        admin_client.get(f"/restores/new/?backup={backup.pk}")
        page = admin_client.get("/restores/new/where/")
        assert page.status_code == 200 and restores.suggest_database_name(backup).encode() in page.content
        # The source's own database is offered no more, with what to do instead.
        gone = f"The database {source_db['dbname']} is not on the source&#x27;s server any more"
        assert gone in page.content.decode() and 'value="existing" disabled' in page.content.decode()
        with pytest.raises(services.Refused, match="not on the source's server any more"):
            restores.request_restore("test", backup, target="existing", database=source_db["dbname"], mode="preview")
        admin_client.post("/restores/new/where/", {"target": "new", "database": names[1]})
        admin_client.post("/restores/new/scope/", {"scope": "all"})
        answer = admin_client.post("/restores/new/review/", {})
        job = RestoreJob.objects.get(target_database=names[1])
        assert answer.status_code == 302 and answer.url == job.get_absolute_url()
        assert job.status == RestoreJob.SUCCEEDED, job.summary
        assert table_fingerprints({**source_db, "dbname": names[1]}) == at_backup

        # The weekly restore test and the download do not need the source either.
        check = verification.run_here(
            verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
        )
        assert check.status == Verification.PASSED, check.summary
        download = admin_client.post(f"/backups/{backup.pk}/download/")
        assert download.status_code == 200 and b"".join(download.streaming_content).startswith(b"PGDMP")
    finally:
        for name in names:
            pg.drop_database(name)


# --- replacing the whole database ----------------------------------------------------


@pytest.fixture
def owner_role(pg_server):
    role = f"sr_owner_{uuid.uuid4().hex[:8]}"
    execute_sql({**pg_server, "dbname": "postgres"}, f"CREATE ROLE {role} NOLOGIN")
    yield role
    for name in databases_owned_by(pg_server, role):
        pg.drop_database(name)
    execute_sql({**pg_server, "dbname": "postgres"}, f"DROP ROLE {role}")


def databases_owned_by(server, role):
    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return [
            r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = %s", [role])
        ]


def test_it_replaces_the_whole_database_ending_the_open_sessions_and_keeping_its_owner_and_settings(
    source_db, backup, owner_role, admin_client
):
    name = source_db["dbname"]
    execute_sql(
        source_db,
        f"ALTER DATABASE {name} OWNER TO {owner_role}; ALTER DATABASE {name} CONNECTION LIMIT 50; "
        f"REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT ON DATABASE {name} TO {owner_role}; "
        f'ALTER DATABASE {name} SET search_path TO "$user", public, "Inventory"; '
        f"ALTER DATABASE {name} SET work_mem TO '12MB'",
    )
    at_backup = table_fingerprints(source_db)
    properties = database_row(source_db, name)
    execute_sql(source_db, 'DELETE FROM big_ledger WHERE id > 100; UPDATE "Inventory"."StockItem" SET note = \'x\'')
    application = psycopg.connect(**source_db, application_name="shop-frontend", autocommit=True)

    job = restore_now(
        backup, target="existing", database=name, mode="full", confirmed_name=name, terminate_connections=True
    )

    kept = f"{name}_before_restore_{job.pk}"
    try:
        assert job.status == RestoreJob.SUCCEEDED, job.summary
        assert table_fingerprints(source_db) == at_backup
        assert database_row(source_db, name) == properties  # owner, open to sessions, limit, grants, settings
        assert database_row(source_db, kept)[1] is True  # the previous database, open for a look
        assert any("shop-frontend" in s for s in job.report["sessions_ended"])
        page = admin_client.get(job.get_absolute_url()).content.decode()
        assert "Sessions ended" in page and "shop-frontend" in page and kept in page
        with pytest.raises(psycopg.OperationalError):
            application.execute("SELECT 1")
        assert job.safety_backup.pinned and kept in job.summary
    finally:
        application.close()
        pg.drop_database(kept)


def test_a_replace_that_finds_sessions_open_changes_nothing_and_unpins_its_safety_backup(
    source_db, backup, monkeypatch
):
    name = source_db["dbname"]
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id > 100")
    before = table_fingerprints(source_db)
    late = []
    restore_to_scratch = restores.restore_to_scratch

    def someone_connects_meanwhile(job, server, scratch_name):
        detail = restore_to_scratch(job, server, scratch_name)
        late.append(psycopg.connect(**source_db, application_name="late-report", autocommit=True))
        return detail

    monkeypatch.setattr(restores, "restore_to_scratch", someone_connects_meanwhile)
    try:
        job = restore_now(backup, target="existing", database=name, mode="full", confirmed_name=name)
    finally:
        for conn in late:
            conn.close()

    assert job.status == RestoreJob.FAILED
    assert "late-report" in job.summary and "nothing was changed" in job.summary
    assert table_fingerprints(source_db) == before
    assert database_row(source_db, name)[1] is True
    assert databases_named(source_db, f"{name}_before_restore_{job.pk}", job.report["scratch_database"]) == []
    safety = job.safety_backup
    assert safety.status == Backup.SUCCEEDED and not safety.pinned
    assert AuditEvent.objects.filter(action="backup.unpin", object_id=str(safety.pk)).exists()


@pytest.fixture
def worker_env(tmp_path):
    """The worker restores with a pg_restore that, once finished, waits while
    the file "hold" exists: the restore caught just before it is applied."""
    wrapper = tmp_path / "bin" / "pg_restore"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\n"{shutil.which(settings.PG_RESTORE)}" "$@"; code=$?\n'
        f'while [ -e "{tmp_path / "hold"}" ]; do sleep 0.05; done; exit $code\n'
    )
    wrapper.chmod(0o755)
    return {"PG_RESTORE": str(wrapper)}


def test_a_worker_killed_between_the_two_renames_leaves_the_database_as_it_was(source_db, backup, worker, tmp_path):
    """The second rename is held up by a lock this test takes on the scratch
    database; the worker is killed while it waits. Both renames were one
    transaction, so PostgreSQL undoes the first."""
    name = source_db["dbname"]
    execute_sql(source_db, "DELETE FROM big_ledger WHERE id > 100")
    before = table_fingerprints(source_db)
    (tmp_path / "hold").touch()
    job = restores.request_restore("test", backup, target="existing", database=name, mode="full", confirmed_name=name)
    wait_for(lambda: worker.processes("pg_restore"), timeout=90)
    scratch = RestoreJob.objects.get(pk=job.pk).report["scratch_database"]
    blocker = psycopg.connect(**{**source_db, "dbname": "postgres"})
    # Updates the scratch database's row and holds it until rolled back: the
    # second rename, the next to update that row, waits for it.
    blocker.execute(f"ALTER DATABASE {scratch} CONNECTION LIMIT -1")
    (tmp_path / "hold").unlink()
    kept = f"{name}_before_restore_{job.pk}"
    try:
        wait_for(lambda: waiting_to_rename(source_db), timeout=30)
        assert databases_named(source_db, name, kept) == [name]  # the first rename is not visible
        worker.kill()
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: not waiting_to_rename(source_db) and not databases_named(source_db, kept), timeout=30)

    with after_heartbeat_timeout():
        assert tasks.tick()["swept_restores"] == [job.pk]
    assert status_of(job) == RestoreJob.FAILED
    assert databases_named(source_db, name, kept, scratch) == [name]
    assert database_row(source_db, name)[1] is True  # open to sessions again
    assert table_fingerprints(source_db) == before


def waiting_to_rename(server):
    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE 'ALTER DATABASE%RENAME%'"
            ).fetchone()[0]
            > 0
        )


# --- another server -------------------------------------------------------------------


def test_it_restores_onto_another_server_from_the_command_line(source_db, backup, password_server):
    """The source's database is gone: the backup goes to a registered restore
    server (one that insists on a password), named on the command line."""
    at_backup = table_fingerprints(source_db)
    pg.drop_database(source_db["dbname"])
    other = password_server
    services.save_restore_server(
        "test",
        RestoreServer(name="Standby", host=other["host"], port=other["port"], user=other["user"]),
        secrets={"password": other["password"]},
    )
    out = StringIO()

    call_command(
        "restore", "--backup", str(backup.pk), "--new-database", "shop_elsewhere", "--server", "Standby", stdout=out
    )

    try:
        assert "succeeded: Restored into the new database shop_elsewhere." in out.getvalue()
        assert "on server Standby" in out.getvalue()
        assert RestoreJob.objects.get().restore_server.name == "Standby"
        assert table_fingerprints({**other, "dbname": "shop_elsewhere"}) == at_backup
        assert other["password"] not in out.getvalue()
    finally:
        with psycopg.connect(**other, dbname="postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS shop_elsewhere")
