"""A MariaDB source through its pages: the form, the Test button and what it
says of the user's privileges and of tables outside the snapshot, and a
catalog rebuilt from MariaDB manifests."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog import backup_runs, services
from catalog.models import Backup, BackupPlan, Source
from tests.factories import local_destination, make_plan, mariadb_source
from tests.harness.mariadb import TEST_PASSWORD


def source_fields(server, database, **changes):
    info = server.info()
    fields = {
        "name": "Shop (MariaDB)",
        "engine": "mariadb",
        "host": info["host"],
        "port": info["port"],
        "dbname": database,
        "user": info["user"],
        "password": info["password"],
        "sslmode": "",
        "grace_minutes": 120,
    }
    return {**fields, **changes}


def test_it_saves_a_mariadb_source_from_the_form(admin_client, mariadb_server, mariadb_database):
    response = admin_client.post(reverse("source_new"), source_fields(mariadb_server, mariadb_database))

    source = Source.objects.get()
    assert response.status_code == 302
    assert (source.engine, source.port, source.dbname) == ("mariadb", mariadb_server.port, mariadb_database)
    assert source.conninfo()["password"] == TEST_PASSWORD
    page = admin_client.get(source.get_absolute_url()).content.decode()
    assert "MariaDB or MySQL" in page and f"strongroom@127.0.0.1:{mariadb_server.port}/{mariadb_database}" in page
    assert TEST_PASSWORD not in page


@pytest.mark.parametrize("port", ["", "5432"], ids=["left empty", "left at PostgreSQL's"])
def test_the_port_becomes_mariadbs_when_left_empty_or_at_postgresqls(admin_client, port):
    fields = {"name": "Shop", "engine": "mariadb", "host": "db.example", "dbname": "shop", "user": "app"}
    admin_client.post(reverse("source_new"), {**fields, "port": port, "grace_minutes": 120})

    source = Source.objects.get()
    assert source.port == 3306
    assert source.target_display() == "app@db.example:3306/shop"


def test_a_mariadb_source_needs_its_fields_and_an_ssl_mode_the_tools_know(admin_client):
    response = admin_client.post(
        reverse("source_new"), {"name": "Shop", "engine": "mariadb", "sslmode": "verify-ca", "grace_minutes": 120}
    )

    errors = response.context["form"].errors
    assert errors["host"] == errors["dbname"] == errors["user"] == ["Required for a MariaDB or MySQL source."]
    assert "verify-full (certificate and host name checked)" in errors["sslmode"][0]
    assert not Source.objects.exists()


def test_the_test_button_reports_the_server_and_that_nothing_is_missing(admin_client, mariadb_server, mariadb_sample):
    response = admin_client.post(reverse("source_test"), source_fields(mariadb_server, mariadb_sample))

    page = response.content.decode()
    assert 'class="test-result ok"' in page
    assert "Connected: MariaDB 10.11." in page and "; mariadb-dump Ver 10." in page and "Distrib 10.11." in page
    assert "User strongroom has every privilege a complete backup needs." in page
    assert "Not covered by the consistent snapshot" not in page
    assert TEST_PASSWORD not in page


def test_the_test_button_says_what_a_user_lacks_and_which_tables_are_outside_the_snapshot(
    admin_client, mariadb_server, mariadb_sample
):
    with mariadb_server.root(mariadb_sample) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE legacy_counters (id INT PRIMARY KEY) ENGINE=MyISAM")
        cursor.execute("CREATE TABLE sessions (id INT PRIMARY KEY) ENGINE=Aria")
        cursor.execute("CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'r3ader-pw'")
        cursor.execute(f"GRANT SELECT, SHOW VIEW ON `{mariadb_sample}`.* TO 'reader'@'127.0.0.1'")
        cursor.execute(f"GRANT TRIGGER ON `{mariadb_sample}`.`film` TO 'reader'@'127.0.0.1'")
    try:
        fields = source_fields(mariadb_server, mariadb_sample, user="reader", password="r3ader-pw")
        page = admin_client.post(reverse("source_test"), fields).content.decode()
    finally:
        with mariadb_server.root() as conn, conn.cursor() as cursor:
            cursor.execute("DROP USER 'reader'@'127.0.0.1'")

    assert 'class="test-result bad"' in page
    assert "User reader lacks what a complete backup needs: " in page
    assert f"TRIGGER on {mariadb_sample} (it has it on film only): triggers are left out of the dump" in page
    assert f"EVENT on {mariadb_sample}: the dump fails at the events" in page
    assert "SELECT on mysql.proc" in page
    assert "SHOW VIEW on" not in page and f"SELECT on {mariadb_sample}" not in page
    assert "Not covered by the consistent snapshot" in page
    assert "legacy_counters (MyISAM), sessions (Aria)." in page
    assert "r3ader-pw" not in page


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"password": "wrong-pw-123"}, "Access denied for user strongroom on 127.0.0.1:"),
        ({"dbname": "no_such_db"}, "Database no_such_db does not exist on 127.0.0.1:"),
        ({"port": 1}, "Cannot reach the MariaDB/MySQL server at 127.0.0.1:1"),
    ],
    ids=["wrong password", "missing database", "nothing listening"],
)
def test_the_test_button_fails_in_words(admin_client, mariadb_server, mariadb_database, changes, words):
    fields = source_fields(mariadb_server, mariadb_database, **changes)
    page = admin_client.post(reverse("source_test"), fields).content.decode()
    assert 'class="test-result bad"' in page and words in page
    assert "wrong-pw-123" not in page and TEST_PASSWORD not in page


@pytest.mark.django_db(transaction=True)
def test_a_catalog_rebuilt_from_mariadb_manifests_has_the_source_and_its_backups(
    mariadb_server, mariadb_database, tmp_path
):
    plan = make_plan(
        mariadb_source(mariadb_server, mariadb_database),
        [local_destination(tmp_path)],
        format="mariadb",
        verify_new_backups=False,
    )
    backup = backup_runs.start_backup("test", plan)
    defaults = Backup.objects.get(pk=backup.pk).database_defaults
    assert defaults == {"charset": "utf8mb4", "collation": "utf8mb4_unicode_ci"}
    call_command("flush", interactive=False, verbosity=0)
    local_destination(tmp_path)

    out = StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=StringIO())

    again = Backup.objects.get()
    source = again.source
    assert (again.pk, again.format, again.table_counts) == (backup.pk, "mariadb", {})
    assert again.database_defaults == defaults  # a restore creates its database with them
    assert (source.engine, source.host, source.port, source.dbname, source.user) == (
        "mariadb",
        "127.0.0.1",
        mariadb_server.port,
        mariadb_database,
        "strongroom",
    )
    assert BackupPlan.objects.get().format == "mariadb"
    assert "Source Shop (MariaDB): recreated without its password" in out.getvalue()
    # With its password set again, its recreated plan runs.
    services.save_source("test", source, changed_fields=["password"], secrets={"password": TEST_PASSWORD})
    newer = backup_runs.start_backup("test", BackupPlan.objects.get())
    newer.refresh_from_db()
    assert newer.status == Backup.SUCCEEDED, newer.error
