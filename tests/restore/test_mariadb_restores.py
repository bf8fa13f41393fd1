"""Restores of MariaDB backups against the session's real MariaDB server: into
a new database (whole or chosen tables), after the source database was
dropped, through the CLI and onto a registered MariaDB server; and the ways
they fail (cancelled, a count that differs, definers the user may not set, a
dead worker) without leaving a database behind."""

import time
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from catalog import services
from catalog.engine import mariadb_restore
from catalog.models import AuditEvent, RestoreServer
from catalog.services import Refused
from restore import services as restores
from restore.models import RestoreJob
from restore.views import server_choices
from tests.factories import mariadb_backup
from tests.harness.mariadb import TEST_PASSWORD, MariaDBServer
from tests.harness.mariadb_sample import fingerprint, sample_database, table_counts
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def sample(mariadb_server):
    """The sample database, loaded once for the module: nothing here changes it."""
    with sample_database(mariadb_server, prefix="sr_shop") as name:
        yield name


@pytest.fixture
def backup(mariadb_server, sample, tmp_path):
    return mariadb_backup(mariadb_server, sample, tmp_path / "disk")


@pytest.fixture
def new_name(mariadb_server):
    """A name for the database a restore creates; dropped afterwards, whatever happened."""
    name = f"sr_new_{uuid.uuid4().hex[:8]}"
    yield name
    mariadb_server.drop_database(name)


def server_params(server):
    return {**server.info(), "dbname": ""}


def exists(server, name):
    return mariadb_restore.database_exists(server_params(server), name)


def test_a_whole_backup_restores_into_a_new_database_equal_to_its_source(mariadb_server, sample, backup, new_name):
    assert restores.suggest_database_name(backup).startswith(f"{sample}_restored_")

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "succeeded", job.summary
    with mariadb_server.connect() as conn:
        assert fingerprint(conn, new_name) == fingerprint(conn, sample)
        recorded = table_counts(conn, sample)
    assert job.summary == f"Restored into the new database {new_name}."
    assert [step["name"] for step in job.steps] == ["checks", "fetch, verify and restore", "post-checks"]
    assert job.report["row_counts"] == {t: {"backup": n, "restored": n} for t, n in recorded.items()}
    assert job.report["table_of_contents"] == job.report["schema_objects"]
    assert job.report["definers_missing"] == {} and job.report["copy"] == "Local disk"
    actions = list(AuditEvent.objects.filter(object_id=str(job.pk)).values_list("action", flat=True))
    assert {"restore.queue", "restore.start", "restore.succeeded"} <= set(actions)


def test_chosen_tables_come_back_alone_and_the_plan_says_what_they_leave_out(mariadb_server, sample, backup, new_name):
    tables = ["film", "rental", "order lines"]
    job = restores.request_restore("test", backup, target="new", database=new_name, tables=tables, enqueue=False)
    assert "views, routines and events do not" in job.describe()

    job = restores.run_restore(job.pk)

    assert job.status == "succeeded", job.summary
    with mariadb_server.connect() as conn:
        source, restored = fingerprint(conn, sample), fingerprint(conn, new_name)
    assert restored["tables"] == {t: source["tables"][t] for t in tables}
    assert sorted(restored["triggers"]) == sorted(t for t in source["triggers"] if t.endswith(" ON film"))
    assert restored["views"] == restored["routines"] == restored["events"] == {}
    assert job.report["foreign_keys_dropped"] == [
        "film.fk_film_language → language",
        "rental.fk_rental_customer → customer",
    ]
    assert "Foreign keys to tables not restored were dropped: film.fk_film_language → language" in job.summary
    assert sorted(job.report["row_counts"]) == sorted(tables)


def test_it_restores_after_the_source_database_was_dropped(mariadb_server, tmp_path):
    gone = mariadb_server.create_database(f"sr_gone_{uuid.uuid4().hex[:6]}")
    try:
        with mariadb_server.connect(gone) as conn, conn.cursor() as cursor:
            cursor.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))")
            cursor.execute("INSERT INTO items (name) VALUES ('bolt'), ('nut 🔩')")
            cursor.execute("CREATE VIEW every_item AS SELECT * FROM items")
            cursor.execute("CREATE TRIGGER named BEFORE INSERT ON items FOR EACH ROW SET NEW.name = TRIM(NEW.name)")
        backup = mariadb_backup(mariadb_server, gone, tmp_path / "disk")
        with mariadb_server.connect() as conn:
            before = fingerprint(conn, gone)
        mariadb_server.drop_database(gone)

        # The wizard's suggestion and the checks reach the server without the database.
        assert restores.suggest_database_name(backup).startswith(f"{gone}_restored_")
        job = restore_now(backup, target="new", database=gone)

        assert job.status == "succeeded", job.summary
        with mariadb_server.connect() as conn:
            assert fingerprint(conn, gone) == before
    finally:
        mariadb_server.drop_database(gone)


def test_the_existing_database_is_never_replaced_and_the_refusal_says_why(mariadb_server, sample, backup):
    with pytest.raises(Refused, match="MariaDB cannot rename a database"):
        restores.request_restore(
            "test", backup, target="existing", database=sample, mode="full", confirmed_name=sample, enqueue=False
        )
    assert restores.ways_into_existing(backup) == ""
    with pytest.raises(Refused, match=f"A database named {sample} already exists"):
        restores.request_restore("test", backup, target="new", database=sample, enqueue=False)
    assert not RestoreJob.objects.exists()


def test_a_cancel_during_the_load_drops_the_new_database(mariadb_server, backup, new_name, monkeypatch):
    job = restores.request_restore("test", backup, target="new", database=new_name, enqueue=False)
    create = mariadb_restore.create_database

    def created_then_cancelled(*args, **kwargs):
        made = create(*args, **kwargs)
        RestoreJob.objects.filter(pk=job.pk).update(cancel_requested=True)  # asked while it runs
        time.sleep(0.6)  # the job's watch sees it (every 0.25 s) before the first rows go in
        return made

    monkeypatch.setattr(mariadb_restore, "create_database", created_then_cancelled)

    job = restores.run_restore(job.pk)

    assert job.status == "cancelled"
    assert job.summary == f"Cancelled by request; the new database {new_name} was dropped."
    assert not exists(mariadb_server, new_name)
    assert job.report["created_database"] == ""


def test_a_restore_whose_counts_differ_fails_and_drops_the_new_database(mariadb_server, backup, new_name):
    backup.table_counts = {**backup.table_counts, "payment": backup.table_counts["payment"] + 1}
    backup.save(update_fields=["table_counts"])

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "failed"
    assert job.summary == "Row counts differ from the backup for payment"
    assert job.report["row_counts"]["payment"]["restored"] == job.report["row_counts"]["payment"]["backup"] - 1
    assert not exists(mariadb_server, new_name)


@pytest.fixture
def limited_server(mariadb_server):
    """A registered restore server: the same mariadbd, reached as a user that
    may create and drop the databases named sr_limited_*, without SUPER or SET USER."""
    user = f"limited_{uuid.uuid4().hex[:6]}"
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'")
        cursor.execute(f"GRANT ALL ON `sr\\_limited\\_%`.* TO '{user}'@'127.0.0.1'")
        cursor.execute(f"GRANT CREATE, DROP ON *.* TO '{user}'@'127.0.0.1'")
    info = mariadb_server.info()
    server = services.save_restore_server(
        "test",
        RestoreServer(name="Standby", engine="mariadb", host=info["host"], port=info["port"], user=user),
        secrets={"password": TEST_PASSWORD},
    )
    yield server
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")


def test_a_registered_mariadb_server_is_checked_and_takes_the_backup_with_the_definers_it_may_set(
    mariadb_server, sample, backup, limited_server
):
    ok, message = services.check_restore_server("test", limited_server)
    assert ok, message
    assert message == f"Connected: MariaDB 10.11; user {limited_server.user} can create databases."
    limited_server.refresh_from_db()
    assert limited_server.engine_version().startswith("MariaDB 10.11.") and TEST_PASSWORD not in message
    name = f"sr_limited_{uuid.uuid4().hex[:6]}"
    try:
        # The sample's triggers, views, routines and events are defined by another user: refused,
        # and nothing is left.
        failed = restore_now(backup, target="new", database=name, restore_server=limited_server)
        assert failed.status == "failed"
        assert "needs the SUPER or SET USER privilege" in failed.summary and limited_server.user in failed.summary
        assert TEST_PASSWORD not in failed.summary + str(failed.steps) + failed.log
        assert not exists(mariadb_server, name)

        job = restore_now(backup, target="new", database=name, restore_server=limited_server, without_owners=True)

        assert job.status == "succeeded", job.summary
        assert "will be defined by the user Strongroom connects as" in job.describe()
        with mariadb_server.connect() as conn:
            restored, source = fingerprint(conn, name), fingerprint(conn, sample)
        assert restored["tables"] == source["tables"]
        definers = {d for kind in ("views", "routines", "triggers", "events") for *_, d in restored[kind].values()}
        assert definers == {f"{limited_server.user}@127.0.0.1"}
        # It may not read mysql.user, so it cannot say whether definers are missing, and says so.
        assert "Could not check the definers' users" in job.summary
    finally:
        mariadb_server.drop_database(name)


def test_an_administrator_registers_a_mariadb_server_which_the_wizard_offers_to_mariadb_backups_only(
    admin_client, mariadb_server, backup
):
    info = mariadb_server.info()
    fields = {"name": "Standby", "engine": "mariadb", "host": info["host"], "port": info["port"], "user": info["user"]}

    response = admin_client.post(
        reverse("server_new"), {**fields, "password": TEST_PASSWORD, "sslmode": ""}, follow=True
    )

    standby = RestoreServer.objects.get(name="Standby")
    assert standby.engine == "mariadb" and standby.server_version.startswith("10.11.")
    page = response.content.decode()
    assert "Connected: MariaDB 10.11; user strongroom can create databases." in page and TEST_PASSWORD not in page
    postgres = services.save_restore_server(
        "test", RestoreServer(name="PG standby", host="127.0.0.1", port=5432, user="postgres")
    )
    assert [server for server, _ in server_choices(backup)] == [standby]
    admin_client.get(f"/restores/new/?backup={backup.pk}")
    where = admin_client.get("/restores/new/where/").content.decode()
    assert "Standby" in where and "MariaDB 10.11." in where and "PG standby" not in where
    assert postgres.engine == "postgresql"


def test_a_new_mariadb_server_left_at_postgresql_s_port_gets_mariadb_s(admin_client):
    fields = {"name": "Replica", "engine": "mariadb", "host": "127.0.0.1", "port": 5432, "user": "restorer"}

    admin_client.post(reverse("server_new"), {**fields, "password": "", "sslmode": ""})

    assert RestoreServer.objects.get(name="Replica").port == 3306


def test_a_postgresql_server_is_not_offered_to_a_mariadb_backup(backup, new_name):
    postgres = services.save_restore_server(
        "test", RestoreServer(name="PG standby", host="127.0.0.1", port=5432, user="postgres")
    )
    with pytest.raises(Refused, match="PG standby is a PostgreSQL server"):
        restores.request_restore(
            "test", backup, target="new", database=new_name, restore_server=postgres, enqueue=False
        )


def test_the_restore_command_restores_chosen_tables_and_refuses_the_existing_database(
    mariadb_server, sample, backup, new_name
):
    out = StringIO()
    call_command(
        "restore", "--backup", str(backup.pk), "--new-database", new_name, "--tables", "film,film_text", stdout=out
    )

    text = out.getvalue()
    assert f"into a new database `{new_name}`" in text and "succeeded: Restored into the new database" in text
    with mariadb_server.connect() as conn:
        assert table_counts(conn, new_name) == {"film": 1000, "film_text": 1000}
    with pytest.raises(CommandError, match="MariaDB cannot rename a database"):
        call_command("restore", "--backup", str(backup.pk), "--into-source", "--confirm", sample, stdout=StringIO())


def test_a_dead_worker_s_new_database_is_dropped_by_the_sweep(mariadb_server, backup, new_name):
    job = restores.request_restore("test", backup, target="new", database=new_name, enqueue=False)
    mariadb_server.create_database(new_name)  # as the worker left it, half-filled
    RestoreJob.objects.filter(pk=job.pk).update(
        status="running", heartbeat_at="2000-01-01T00:00:00Z", report={"created_database": new_name}
    )

    assert restores.sweep_stale_restores() == [job.pk]

    assert not exists(mariadb_server, new_name)
    assert RestoreJob.objects.get(pk=job.pk).status == "failed"


def test_a_restore_creates_its_database_with_the_source_databases_own_collation(mariadb_server, tmp_path, new_name):
    # The source's collation is not the server's default (utf8mb4_unicode_ci): the
    # dump of one database does not carry it, so the backup records it apart.
    source = f"sr_general_{uuid.uuid4().hex[:8]}"
    with mariadb_server.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{source}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cursor.execute(f"CREATE TABLE `{source}`.notes (id INT PRIMARY KEY, body TEXT)")
        cursor.execute(f"INSERT INTO `{source}`.notes VALUES (1, 'Grüße'), (2, 'naïve')")
    try:
        backup = mariadb_backup(mariadb_server, source, tmp_path / "disk")
        assert backup.database_defaults == {"charset": "utf8mb4", "collation": "utf8mb4_general_ci"}
        manifest = next((tmp_path / "disk").rglob("*.manifest.json")).read_text()
        assert '"collation": "utf8mb4_general_ci"' in manifest

        job = restore_now(backup, target="new", database=new_name)
    finally:
        mariadb_server.drop_database(source)

    assert job.status == "succeeded", job.summary
    assert job.report["database_created_with"] == "utf8mb4, utf8mb4_general_ci"
    with mariadb_server.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", [new_name]
        )
        assert cursor.fetchone() == ("utf8mb4_general_ci",)


def test_a_collation_the_server_lacks_falls_back_to_utf8mb4_and_says_so(mariadb_server, new_name):
    made = mariadb_restore.create_database(
        server_params(mariadb_server), new_name, charset="utf8mb4", collation="utf8mb4_0900_ai_ci"
    )
    assert made.startswith("utf8mb4, utf8mb4_")
    assert made.endswith("(the source's utf8mb4, utf8mb4_0900_ai_ci is unknown to this server)")
    assert exists(mariadb_server, new_name)


@pytest.fixture(scope="module")
def other_server():
    """A second MariaDB server of its own (its own mariadbd, data directory and
    users): the machine a backup is restored on when the source's is lost."""
    server = MariaDBServer().start()
    yield server
    server.stop()


def test_a_backup_restores_on_another_server_after_the_source_database_is_gone(mariadb_server, other_server, tmp_path):
    with sample_database(mariadb_server, prefix="sr_lost") as source:
        backup = mariadb_backup(mariadb_server, source, tmp_path / "disk")
        with mariadb_server.connect() as conn:
            original = fingerprint(conn, source)
    # The source database is gone (sample_database dropped it); the other
    # server never had it, nor the user that defined its views and routines.
    info = other_server.info()
    standby = services.save_restore_server(
        "test",
        RestoreServer(name="Other machine", engine="mariadb", host=info["host"], port=info["port"], user=info["user"]),
        secrets={"password": TEST_PASSWORD},
    )

    job = restore_now(backup, target="new", database="shop_again", restore_server=standby)

    assert job.status == "succeeded", job.summary
    with other_server.connect() as conn:
        restored = fingerprint(conn, "shop_again")
    assert restored["tables"] == original["tables"]
    for kind in ("views", "routines", "triggers", "events"):
        assert restored[kind] == original[kind], kind
    # Their definer exists on the source's server only: named, so that it can be created.
    assert job.report["definers_missing"] and "sample_owner" in str(job.report["definers_missing"])
    assert "sample_owner" in job.summary
