"""Export plans through the pages and the backup pipeline: an administrator
picks tables (one with a row filter) and a named set in the plan form; a run
exports exactly the filtered rows, with an export section in its manifest,
and passes a checksum and a restore test like any dump."""

import json

import pytest

from catalog import backup_runs, services, verification
from catalog.models import AuditEvent, Backup, BackupPlan, Source
from tests.catalog.exports.sample_inventory import EXPORTED_ORDERS, create_inventory, scalar
from tests.catalog.test_pages import RETENTION_DEFAULTS
from tests.factories import local_destination, make_plan, pg_source
from tests.support import execute_sql, restore_now

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cret-pw-in-no-page"


@pytest.fixture
def source_db(pg_database):
    create_inventory(pg_database)
    return pg_database


@pytest.fixture
def source(source_db):
    return pg_source(source_db, password=SECRET)


@pytest.fixture
def destination(tmp_path):
    return local_destination(tmp_path / "exports")


def plan_form(source, destination, **fields):
    return {
        "name": "Weekly export",
        "source": source.pk,
        "schedule": "0 4 * * 0",
        "format": "csv",
        "compression": "zstd",
        "encrypt": "on",
        "destinations": [destination.pk],
        "enabled": "on",
        **RETENTION_DEFAULTS,
        "export_picker": "1",
        **fields,
    }


CHOICE = {
    "export_table": ["public.customers", "public.orders"],
    "where:public.orders": EXPORTED_ORDERS,
    "where:public.customers": "",
    "set_label": ["audit logs", ""],
    "set_pattern": ["public.audit_*", ""],
}


def test_it_creates_an_export_plan_through_the_form(admin_client, source, destination):
    response = admin_client.post("/plans/new/", plan_form(source, destination, **CHOICE))

    assert response.status_code == 302, response.content.decode()[:3000]
    plan = BackupPlan.objects.get(name="Weekly export")
    assert plan.is_export() and plan.format == "csv"
    assert plan.export_tables == [
        {"schema": "public", "name": "customers", "where": ""},
        {"schema": "public", "name": "orders", "where": EXPORTED_ORDERS},
    ]
    assert plan.export_sets == [{"label": "audit logs", "pattern": "public.audit_*"}]
    event = AuditEvent.objects.get(action="plan.create")
    assert event.changes["export_tables"] == plan.export_tables and event.changes["export_sets"] == plan.export_sets
    page = admin_client.get(plan.get_absolute_url()).content.decode()
    assert "public.orders" in page and "total &gt; 150" in page and "public.audit_*" in page and "audit logs" in page


def test_it_edits_a_filter_and_audits_the_new_choice(admin_client, source, destination):
    admin_client.post("/plans/new/", plan_form(source, destination, **CHOICE))
    plan = BackupPlan.objects.get()
    edit_page = admin_client.get(f"/plans/{plan.pk}/edit/").content.decode()
    assert "/plans/tables/" in edit_page and f'"plan_id": "{plan.pk}"' in edit_page

    response = admin_client.post(
        f"/plans/{plan.pk}/edit/", plan_form(source, destination, **{**CHOICE, "where:public.orders": "total > 190"})
    )

    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.export_tables[1] == {"schema": "public", "name": "orders", "where": "total > 190"}
    event = AuditEvent.objects.get(action="plan.update")
    assert event.changes["export_tables"][1]["where"] == "total > 190"
    admin_client.post(
        f"/plans/{plan.pk}/edit/", plan_form(source, destination, **{**CHOICE, "where:public.orders": "total > 190"})
    )
    assert "export_tables" not in AuditEvent.objects.filter(action="plan.update").first().changes  # unchanged


def test_it_refuses_a_malformed_where_with_postgresqls_message(admin_client, source, destination):
    choice = {**CHOICE, "where:public.orders": "nope > 3"}
    response = admin_client.post("/plans/new/", plan_form(source, destination, **choice))

    page = response.content.decode()
    assert response.status_code == 200
    assert "column &quot;nope&quot; does not exist" in page or 'column "nope" does not exist' in page
    assert 'value="nope &gt; 3"' in page  # shown again, under its table, to be corrected
    assert SECRET not in page
    assert not BackupPlan.objects.exists()


def test_it_refuses_an_export_of_nothing_and_an_unknown_table(admin_client, source, destination):
    nothing = admin_client.post("/plans/new/", plan_form(source, destination)).content.decode()
    assert "Pick at least one table or add a named set" in nothing

    unknown = admin_client.post("/plans/new/", plan_form(source, destination, export_table=["public.nowhere"]))
    assert "The source has no table public.nowhere" in unknown.content.decode()
    assert not BackupPlan.objects.exists()


def test_a_sqlite_source_has_export_plans_that_run_verify_and_restore_into_a_new_file(
    admin_client, destination, tmp_path
):
    import sqlite3

    path = tmp_path / "notes.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, score REAL, photo BLOB);
            CREATE TABLE audit_views (id INTEGER PRIMARY KEY, who TEXT);
            CREATE TABLE private (id INTEGER PRIMARY KEY, token TEXT);
            INSERT INTO notes VALUES (1, 'first', 1.5, x'00ff0a'), (2, 'مرحبا', NULL, NULL), (3, '', 3.25, x'');
            INSERT INTO audit_views VALUES (1, 'ann'), (2, 'bob');
            INSERT INTO private VALUES (1, 'left out');
        """)
    source = services.save_source("test", Source(name="Notes", engine="sqlite", sqlite_path=str(path), port=None))
    picker = admin_client.get(f"/plans/tables/?source={source.pk}&format=jsonl").content.decode()
    assert 'value="main.notes"' in picker and "schema main" in picker

    refused = admin_client.post(
        "/plans/new/",
        plan_form(
            source, destination, format="csv", **{"export_table": ["main.notes"], "where:main.notes": "nope > 1"}
        ),
    )
    assert "nope" in refused.content.decode() and not BackupPlan.objects.exists()
    response = admin_client.post(
        "/plans/new/",
        plan_form(
            source,
            destination,
            format="csv",
            **{
                "export_table": ["main.notes"],
                "where:main.notes": "id > 1",
                "set_label": ["audit"],
                "set_pattern": ["audit_*"],
            },
        ),
    )
    assert response.status_code == 302
    plan = BackupPlan.objects.get()
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {"main.notes": 2, "main.audit_views": 2}
    checksum = verification.run_here(verification.create_verification("test", backup, "checksum", enqueue_it=False))
    assert checksum.status == "passed", checksum.summary
    # The test restore loads into a scratch SQLite file: no PostgreSQL server needed.
    restore = verification.run_here(verification.create_verification("test", backup, "restore", enqueue_it=False))
    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == backup.table_counts

    from restore import services as restores

    name = restores.suggest_database_name(backup)
    with pytest.raises(services.Refused, match="it loads into a new file"):
        restores.request_restore(
            "test",
            backup,
            target="existing",
            database="notes.sqlite3",
            mode="merge",
            confirmed_name="notes.sqlite3",
            enqueue=False,
        )
    execute_sql_sqlite(path, "DELETE FROM notes; UPDATE audit_views SET who = 'changed'")
    job = restore_now(backup, target="new", database=name, tables=["main.notes"])

    assert job.status == "succeeded", job.summary
    with sqlite3.connect(tmp_path / name) as restored:
        assert restored.execute("SELECT * FROM notes ORDER BY id").fetchall() == [
            (2, "مرحبا", None, None),
            (3, "", 3.25, b""),
        ]
        assert [r[0] for r in restored.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]
    assert job.report["row_counts"] == {"main.notes": {"backup": 2, "restored": 2}}
    assert sqlite3.connect(path).execute("SELECT count(*) FROM notes").fetchone() == (0,)  # the source is untouched


def execute_sql_sqlite(path, script):
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.executescript(script)


def test_auditors_cannot_open_the_form_or_the_table_picker(auditor_client, source):
    assert auditor_client.get("/plans/new/").status_code == 403
    assert auditor_client.get(f"/plans/tables/?source={source.pk}&format=csv").status_code == 403


def test_the_table_picker_lists_live_tables_by_schema_with_the_sets_matches(admin_client, source, destination):
    plan = make_plan(
        source,
        [destination],
        name="Export",
        format="jsonl",
        export_tables=[{"schema": "public", "name": "orders", "where": EXPORTED_ORDERS}],
        export_sets=[{"label": "audit logs", "pattern": "public.audit_*"}],
    )

    page = admin_client.get(f"/plans/tables/?source={source.pk}&format=jsonl&plan_id={plan.pk}").content.decode()

    assert "schema public" in page
    for table in ("public.customers", "public.orders", "public.settings", "public.audit_logins"):
        assert f'value="{table}"' in page
    assert 'value="public.orders" id="export-1-4" checked' in page or 'value="public.orders"' in page
    assert "public.audit_changes, public.audit_logins" in page  # what the set matches today
    assert admin_client.get(f"/plans/tables/?source={source.pk}&format=custom").content.strip() == b""
    assert SECRET not in page


def run_export(source, destination, **fields):
    plan = make_plan(
        source,
        [destination],
        name="Export",
        format=fields.pop("format", "csv"),
        export_tables=[
            {"schema": "public", "name": "customers", "where": ""},
            {"schema": "public", "name": "orders", "where": EXPORTED_ORDERS},
        ],
        export_sets=[{"label": "audit logs", "pattern": "public.audit_*"}],
        **fields,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    return backup


def test_a_run_exports_the_filtered_rows_with_an_export_manifest_and_no_secret(
    admin_client, source, source_db, destination, tmp_path
):
    backup = run_export(source, destination, verify_new_backups=False)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {
        "public.customers": 120,
        "public.orders": scalar(source_db, f"SELECT count(*) FROM orders WHERE {EXPORTED_ORDERS}"),
        "public.audit_changes": 3,
        "public.audit_logins": 40,
    }
    copy = backup.copies.get()
    raw_manifest = (tmp_path / "exports" / copy.manifest_key).read_text()
    manifest = json.loads(raw_manifest)
    assert manifest["format"] == "csv" and manifest["table_counts"] == backup.table_counts
    assert manifest["export"], "the manifest has an export section"
    assert "orders" in json.dumps(manifest["export"]) and "numeric" in json.dumps(manifest["export"])
    assert SECRET not in raw_manifest and SECRET not in backup.log
    assert SECRET not in json.dumps(list(AuditEvent.objects.values_list("changes", flat=True)))
    assert copy.key.endswith(".tar.zst.enc")
    page = admin_client.get(backup.get_absolute_url()).content.decode()
    assert "Export: CSV with header" in page and "after the plan's row filters" in page
    assert "public.audit_logins" in page and SECRET not in page


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "sql"])
def test_an_export_passes_a_checksum_and_a_restore_test(source, destination, fmt):
    backup = run_export(source, destination, verify_new_backups=False, format=fmt)
    assert backup.status == Backup.SUCCEEDED, backup.error

    checksum = verification.run_here(verification.create_verification("test", backup, "checksum", enqueue_it=False))
    restore = verification.run_here(verification.create_verification("test", backup, "restore", enqueue_it=False))

    assert checksum.status == "passed", checksum.summary
    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == backup.table_counts and restore.evidence["rows_match"]
    assert restore.evidence["scratch_dropped"] is True


def test_a_restore_test_fails_when_the_counts_differ(source, destination):
    backup = run_export(source, destination, verify_new_backups=False)
    Backup.objects.filter(pk=backup.pk).update(table_counts={**backup.table_counts, "public.customers": 121})
    backup.refresh_from_db()

    restore = verification.run_here(verification.create_verification("test", backup, "restore", enqueue_it=False))

    assert restore.status == "failed"
    assert "public.customers: 120 rows, 121 recorded" in restore.summary


def test_a_plan_without_tables_cannot_run_and_a_dropped_table_fails_the_run(source, source_db, destination):
    empty = make_plan(source, [destination], name="Empty", format="sql")
    with pytest.raises(services.Refused, match="exports no table"):
        backup_runs.start_backup("test", empty)

    backup_plan = make_plan(
        source,
        [destination],
        name="Gone",
        format="sql",
        export_tables=[{"schema": "public", "name": "settings", "where": ""}],
    )
    execute_sql(source_db, "DROP TABLE settings")
    backup = backup_runs.start_backup("test", backup_plan)
    backup.refresh_from_db()
    assert backup.status == Backup.FAILED
    assert "no longer has the table(s) public.settings" in backup.error
    assert all(copy.status == "failed" for copy in backup.copies.all())


def test_the_edit_page_keeps_a_dropped_table_ticked_and_flagged_until_it_is_unticked(
    admin_client, source, source_db, destination
):
    admin_client.post(
        "/plans/new/",
        plan_form(source, destination, **{**CHOICE, "export_table": ["public.customers", "public.settings"]}),
    )
    plan = BackupPlan.objects.get()
    execute_sql(source_db, "DROP TABLE settings")

    picker = admin_client.get(f"/plans/tables/?source={source.pk}&plan_id={plan.pk}&format=csv").content.decode()
    assert 'value="public.settings" id="export-' in picker and "Not in this source (dropped" in picker
    kept = admin_client.post(
        f"/plans/{plan.pk}/edit/",
        plan_form(source, destination, **{**CHOICE, "export_table": ["public.customers", "public.settings"]}),
    )
    assert kept.status_code == 200 and "The source has no table public.settings" in kept.content.decode()
    plan.refresh_from_db()
    assert [t["name"] for t in plan.export_tables] == [
        "customers",
        "settings",
    ]  # nothing dropped behind the user's back

    unticked = admin_client.post(
        f"/plans/{plan.pk}/edit/", plan_form(source, destination, **{**CHOICE, "export_table": ["public.customers"]})
    )
    assert unticked.status_code == 302
    plan.refresh_from_db()
    assert [t["name"] for t in plan.export_tables] == ["customers"]


def test_a_named_set_takes_in_a_table_created_after_the_plan(source, source_db, destination):
    first = run_export(source, destination, verify_new_backups=False, format="sql")
    assert "public.audit_exports" not in first.table_counts
    assert f"public.orders (where {EXPORTED_ORDERS})" in first.log

    execute_sql(
        source_db,
        "CREATE TABLE audit_exports (id int PRIMARY KEY, what text); "
        "INSERT INTO audit_exports VALUES (1, 'first'), (2, 'second')",
    )
    second = backup_runs.start_backup("test", first.plan)
    second.refresh_from_db()

    assert second.status == Backup.SUCCEEDED, second.error
    assert second.table_counts["public.audit_exports"] == 2
    assert set(second.table_counts) == set(first.table_counts) | {"public.audit_exports"}


MEASUREMENTS = r"""
CREATE TABLE measurements (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL,
                           value numeric NOT NULL DEFAULT 0, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements (at, value)
    SELECT TIMESTAMPTZ '2025-11-01 00:00:00+00' + g * INTERVAL '1 day', g FROM generate_series(1, 90) g;
"""


def test_a_partitioned_table_is_picked_by_its_parents_name_and_exports_every_partition(
    admin_client, source, source_db, destination
):
    execute_sql(source_db, MEASUREMENTS)

    page = admin_client.get(f"/plans/tables/?source={source.pk}&format=csv").content.decode()

    assert 'value="public.measurements"' in page and "partitioned: 2 partitions" in page
    assert 'value="public.measurements_2025"' not in page and 'value="public.measurements_2026"' not in page
    plan = make_plan(
        source,
        [destination],
        name="Measurements",
        format="csv",
        verify_new_backups=False,
        export_tables=[{"schema": "public", "name": "measurements", "where": ""}],
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {"public.measurements": 90}

    restore = verification.run_here(verification.create_verification("test", backup, "restore", enqueue_it=False))
    assert restore.status == "passed", restore.summary
    assert restore.evidence["rows"] == {"public.measurements": 90}

    # Restored by the parent's name into a new database: one table with every partition's rows, its identity continuing.
    from restore import services as restores
    from tests.harness import pg

    name = restores.suggest_database_name(backup)
    job = restore_now(backup, target="new", database=name, tables=["public.measurements"])
    try:
        assert job.status == "succeeded", job.summary
        restored = {**source_db, "dbname": name}
        assert scalar(restored, "SELECT count(*) FROM measurements") == 90
        execute_sql(restored, "INSERT INTO measurements (at) VALUES ('2026-06-01')")
        assert scalar(restored, "SELECT max(id) FROM measurements") == 91
    finally:
        pg.drop_database(name)
