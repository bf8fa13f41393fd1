"""Restores from an export through the restore service: merge into the
source database brings back exactly the deleted rows the export holds,
chosen tables load into a new database as they were at export time, preview
compares, and a full replace from an export is refused."""

import psycopg
import pytest

from catalog import backup_runs
from catalog.models import Backup
from catalog.services import Refused
from restore import services as restores
from tests.catalog.exports.sample_inventory import EXPORTED_ORDERS, create_inventory, rows_of
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.support import execute_sql, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source_db(pg_database):
    create_inventory(pg_database)
    return pg_database


@pytest.fixture
def export(source_db, tmp_path):
    plan = make_plan(
        pg_source(source_db),
        [local_destination(tmp_path / "exports")],
        name="Export",
        format="csv",
        verify_new_backups=False,
        export_tables=[
            {"schema": "public", "name": "customers", "where": ""},
            {"schema": "public", "name": "orders", "where": EXPORTED_ORDERS},
        ],
        export_sets=[{"label": "audit logs", "pattern": "public.audit_*"}],
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def test_a_merge_restores_exactly_the_deleted_rows_the_export_holds(source_db, export):
    customers, orders = rows_of(source_db, "customers"), rows_of(source_db, "orders")
    execute_sql(source_db, "DELETE FROM customers WHERE id <= 10; DELETE FROM orders WHERE id % 10 = 0")
    execute_sql(source_db, "UPDATE customers SET name = 'changed since' WHERE id = 50")  # kept as it is
    changed_customer = rows_of(source_db, "customers", "id = 50")
    name = source_db["dbname"]

    job = restore_now(export, target="existing", database=name, mode="merge", confirmed_name=name)

    assert job.status == "succeeded", job.summary
    deleted_matching = sum(1 for r in orders if _order_id(r) % 10 == 0 and _order_total(r) > 150)
    assert job.report["inserted"]["public.customers"] == 10
    assert job.report["inserted"]["public.orders"] == deleted_matching
    now_customers = rows_of(source_db, "customers")
    assert len(now_customers) == len(customers)
    assert rows_of(source_db, "customers", "id = 50") == changed_customer
    assert [r for r in now_customers if "changed since" not in r[0]] == [
        r for r in customers if not r[0].startswith("(50,")
    ]
    # Orders: back are the deleted rows that matched the export's filter; the others stay deleted.
    expected_orders = [r for r in orders if _order_id(r) % 10 != 0 or _order_total(r) > 150]
    assert rows_of(source_db, "orders") == expected_orders
    assert job.safety_backup is not None and job.safety_backup.status == Backup.SUCCEEDED


def _order_id(row):
    return int(row[0].strip("()").split(",")[0])


def _order_total(row):
    return float(row[0].strip("()").split(",")[2])


def test_chosen_tables_load_into_a_new_database_as_they_were_at_export_time(source_db, export):
    at_export = {t: rows_of(source_db, t) for t in ("customers", "audit_logins")}
    execute_sql(source_db, "DELETE FROM customers WHERE id > 100; INSERT INTO audit_logins VALUES (999, 'late', now())")
    name = restores.suggest_database_name(export)

    job = restore_now(export, target="new", database=name, tables=["public.customers", "public.audit_logins"])

    try:
        assert job.status == "succeeded", job.summary
        restored = {**source_db, "dbname": name}
        assert {t: rows_of(restored, t) for t in at_export} == at_export
        with psycopg.connect(**restored) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
        assert tables == [("audit_logins",), ("customers",)]
        assert job.report["row_counts"]["public.customers"] == {"backup": 120, "restored": 120}
    finally:
        pg.drop_database(name)


def test_a_preview_compares_and_changes_nothing(source_db, export):
    execute_sql(source_db, "DELETE FROM audit_logins WHERE id <= 5")
    before = rows_of(source_db, "audit_logins")
    name = source_db["dbname"]

    job = restore_now(export, target="existing", database=name, mode="preview")

    assert job.status == "succeeded", job.summary
    logins = next(t for t in job.report["tables"] if t["table"] == "public.audit_logins")
    assert logins["only_in_backup"] == 5 and logins["only_in_target"] == 0
    assert rows_of(source_db, "audit_logins") == before


def test_a_full_replace_from_an_export_is_refused(source_db, export):
    name = source_db["dbname"]
    with pytest.raises(Refused, match="Preview or merge it, or load it into a new database"):
        restores.request_restore(
            "test", export, target="existing", database=name, mode="full", confirmed_name=name, enqueue=False
        )


def test_the_wizard_offers_an_export_for_preview_and_merge_only(admin_client, source_db, export):
    admin_client.get(f"/restores/new/?backup={export.pk}")
    assert f'value="{export.pk}"' in admin_client.get("/restores/new/what/").content.decode()  # offered in step 1
    admin_client.post("/restores/new/where/", {"target": "existing"})
    admin_client.post("/restores/new/scope/", {"scope": "all"})

    page = admin_client.get("/restores/new/mode/").content.decode()
    assert 'value="preview"' in page and 'value="merge"' in page and 'value="full"' not in page
    refused = admin_client.post("/restores/new/mode/", {"mode": "full"}, follow=True).content.decode()
    assert "Choose how to restore: preview, merge." in refused


def test_an_export_stored_in_s3_merges_back_from_the_bucket_when_the_local_copy_is_gone(source_db, tmp_path, s3_bucket):
    from tests.factories import s3_destination

    local = local_destination(tmp_path / "local")
    plan = make_plan(
        pg_source(source_db),
        [local, s3_destination(s3_bucket)],
        name="Export to S3",
        format="jsonl",
        verify_new_backups=False,
        export_tables=[{"schema": "public", "name": "customers", "where": ""}],
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert {c.destination.kind: c.status for c in backup.copies.all()} == {"local": "durable", "s3": "durable"}
    local_copy = backup.copies.get(destination=local)
    (tmp_path / "local" / local_copy.key).unlink()  # only the bucket's copy is left to read
    customers = rows_of(source_db, "customers")
    execute_sql(source_db, "DELETE FROM customers WHERE id % 3 = 0")
    name = source_db["dbname"]

    job = restore_now(backup, target="existing", database=name, mode="merge", confirmed_name=name)

    assert job.status == "succeeded", job.summary
    assert job.report["copy"] == "Off-site S3" and "Local disk" in job.report["skipped_copies"][0]
    assert job.report["inserted"] == {"public.customers": 40}
    assert rows_of(source_db, "customers") == customers
