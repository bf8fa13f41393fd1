"""Plans of a MariaDB source: offered only its dump format, and limited, if
chosen, to some tables (whole: mariadb-dump has no row filter per table)."""

import pytest
from django.urls import reverse

from catalog import backup_runs
from catalog.models import Backup, BackupPlan
from tests.catalog.mariadb.conftest import load_dump
from tests.factories import local_destination, make_plan, mariadb_source, pg_source
from tests.harness.mariadb_sample import fingerprint
from tests.support import decrypt

PLAN_FIELDS = {
    "name": "Nightly",
    "schedule_preset": "cron",
    "schedule": "0 3 * * *",
    "format": "mariadb",
    "compression": "zstd",
    "compression_level": "",
    "dump_jobs": 2,
    "encrypt": "on",
    "enabled": "on",
    "retention_mode": "last",
    "keep_last": 7,
    "keep_daily": 30,
    "keep_weekly": 12,
    "keep_monthly": 12,
    "keep_yearly": 5,
    "keep_days": 30,
    "keep_minimum": 1,
    "keep_manual_days": 30,
    "restore_test_days": 7,
    "checksum_all_days": 30,
}


@pytest.fixture
def source(mariadb_server, mariadb_sample):
    return mariadb_source(mariadb_server, mariadb_sample)


def post_plan(client, source, destination, **fields):
    data = {**PLAN_FIELDS, "source": source.pk, "destinations": [destination.pk], **fields}
    return client.post(reverse("plan_new"), data)


def test_a_new_plan_of_a_mariadb_source_offers_its_dump_only(admin_client, source, pg_server):
    pg_source({**pg_server, "dbname": "postgres"})  # another engine's formats exist, hidden for this source
    page = admin_client.get(reverse("plan_new"), {"source": source.pk}).content.decode()
    assert '<option value="mariadb" selected data-engines="mariadb">' in page
    assert '<option value="custom" data-engines="postgresql" hidden disabled>' in page


def test_a_plan_without_tables_dumps_the_whole_database(admin_client, source, tmp_path):
    response = post_plan(admin_client, source, local_destination(tmp_path))
    assert response.status_code == 302, response.context["form"].errors
    plan = BackupPlan.objects.get()
    assert (plan.format, plan.export_tables, plan.export_sets) == ("mariadb", [], [])
    assert "The whole database" in admin_client.get(plan.get_absolute_url()).content.decode()


def test_the_table_picker_lists_the_databases_tables_without_row_filters(admin_client, source, mariadb_sample):
    page = admin_client.get(reverse("export_tables"), {"source": source.pk, "format": "mariadb"}).content.decode()
    assert f'value="{mariadb_sample}.order lines"' in page and f'value="{mariadb_sample}.salaries"' in page
    assert "partitioned: 4 partitions" in page
    assert 'name="where:' not in page and "None ticked: the whole database" in page


@pytest.mark.django_db(transaction=True)
def test_a_plan_of_chosen_tables_dumps_those_alone(
    admin_client, mariadb_server, source, mariadb_sample, fresh_database, tmp_path
):
    chosen = [f"{mariadb_sample}.order lines", f"{mariadb_sample}.odd`name"]
    response = post_plan(
        admin_client,
        source,
        local_destination(tmp_path),
        export_table=chosen,
        export_picker="1",
        verify_new_backups="",
    )
    assert response.status_code == 302, response.context["form"].errors
    plan = BackupPlan.objects.get()
    assert [t["name"] for t in plan.export_tables] == ["order lines", "odd`name"]
    assert 'Only <span class="mono">order lines</span>' in admin_client.get(plan.get_absolute_url()).content.decode()

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {"odd`name": 54, "order lines": 295}
    plain = tmp_path / "plain.sql"
    assert decrypt(tmp_path / backup.object_key, plain).returncode == 0
    load_dump(mariadb_server, fresh_database, plain.read_bytes())
    with mariadb_server.connect() as conn:
        restored, original = fingerprint(conn, fresh_database), fingerprint(conn, mariadb_sample)
    assert restored["tables"] == {name: original["tables"][name] for name in ("odd`name", "order lines")}
    assert restored["routines"] == original["routines"] and restored["events"] == original["events"]


def test_a_row_filter_is_refused_for_a_mariadb_plan(admin_client, source, mariadb_sample, tmp_path):
    table = f"{mariadb_sample}.salaries"
    response = post_plan(
        admin_client,
        source,
        local_destination(tmp_path),
        export_table=[table],
        export_picker="1",
        **{f"where:{table}": "salary > 100000"},
    )
    assert response.status_code == 200
    assert "A MariaDB backup dumps whole tables" in " ".join(response.context["form"].non_field_errors())
    assert not BackupPlan.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_chosen_table_dropped_since_fails_the_run_in_words(mariadb_server, source, mariadb_sample, tmp_path):
    plan = make_plan(
        source,
        [local_destination(tmp_path)],
        format="mariadb",
        export_tables=[{"schema": mariadb_sample, "name": "audit_log", "where": ""}],
    )
    with mariadb_server.connect(mariadb_sample) as conn, conn.cursor() as cursor:
        cursor.execute("DROP TABLE audit_log")

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.FAILED
    assert backup.error == (
        f"The source no longer has the table(s) {mariadb_sample}.audit_log that plan Nightly exports; edit the plan."
    )
