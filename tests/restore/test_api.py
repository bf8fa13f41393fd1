"""Restores through the API (restore/api_views.py), against a real PostgreSQL:
the wizard's choices and service, preview by default, the existing database
changed only with its name repeated and after a safety backup, progress and
report by GET, the restore scope, and no secret in any answer."""

import psycopg
import pytest
from django_q.conf import Conf

from catalog import backup_runs
from catalog.models import AuditEvent, Backup, RestoreServer
from restore import services as restores
from restore import tasks
from restore.models import RestoreJob
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.support import database_exists, execute_sql

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "api-restore-s3cret"  # the source's password: no answer may hold it
SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric(10, 2));
INSERT INTO customers SELECT n, 'customer ' || n FROM generate_series(1, 40) n;
INSERT INTO orders SELECT n, 1 + n % 40, n * 1.5 FROM generate_series(1, 300) n;
"""


@pytest.fixture
def backup(pg_database, tmp_path):
    execute_sql(pg_database, SHOP)
    plan = make_plan(
        pg_source(pg_database, password=PASSWORD),
        [local_destination(tmp_path / "disk")],
        verify_new_backups=False,
        retention_mode="last",
        keep_last=20,
    )
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def restorer():
    token, raw = make_token(scopes=["read", "restore"], name="restore drill")
    return raw


@pytest.fixture
def new_databases():
    """Names of databases a test restores into; dropped afterwards."""
    names = []
    yield names
    for name in names:
        pg.drop_database(name)


def post_restore(client, raw, **body):
    return client.post("/api/v1/restores", body, content_type="application/json", headers=bearer(raw))


def rows(conninfo, table):
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_preview_is_the_default_and_answers_the_plan_without_starting_anything(client, backup, restorer):
    suggested = restores.suggest_database_name(backup)
    events = AuditEvent.objects.count()

    answer = post_restore(client, restorer, backup=backup.pk)

    assert answer.status_code == 200, answer.content
    plan = answer.json()
    assert plan["started"] is False and plan["target"] == "new" and plan["database"] == suggested
    assert plan["mode"] == "full" and plan["restore_server"] is None and plan["tables"] == []
    assert plan["plan"].startswith(f"Restore the whole database from backup #{backup.pk} of ")
    assert plan["action"] == "Restore into a new database"
    assert plan["safety_backup"] is False and plan["confirm_database"] is None and plan["roles_missing"] == []
    assert not RestoreJob.objects.exists()
    assert not database_exists(pg.ensure_server(), suggested)
    # The use is audited; no restore was queued.
    assert list(AuditEvent.objects.order_by("pk")[events:].values_list("action", flat=True)) == ["api.restore_start"]


def test_a_run_into_a_new_database_brings_back_every_row_and_reports_by_get(
    client, backup, restorer, pg_database, new_databases
):
    at_backup = {table: rows(pg_database, table) for table in ("customers", "orders")}
    execute_sql(pg_database, "DELETE FROM orders WHERE id > 200")  # later changes must not matter
    new_databases.append("shop_from_api")

    answer = post_restore(client, restorer, backup=backup.pk, mode="full", database="shop_from_api")

    assert answer.status_code == 202, answer.content
    job = RestoreJob.objects.get()
    assert answer["Location"] == f"http://testserver/api/v1/restores/{job.pk}"
    detail = client.get(answer["Location"], headers=bearer(restorer)).json()
    assert detail["status"] == "succeeded", detail["summary"]
    assert detail["summary"] == "Restored into the new database shop_from_api."
    assert [step["name"] for step in detail["steps"]] == ["checks", "fetch, verify and restore", "apply", "post-checks"]
    assert all(step["status"] == "done" for step in detail["steps"]) and detail["current_step"] == ""
    assert detail["report"]["row_counts"] == {
        "public.customers": {"backup": 40, "restored": 40},
        "public.orders": {"backup": 300, "restored": 300},
    }
    assert detail["safety_backup"] is None and detail["links"]["page"] == f"http://testserver/restores/{job.pk}/"
    restored = {**pg_database, "dbname": "shop_from_api"}
    assert {table: rows(restored, table) for table in at_backup} == at_backup
    assert set(AuditEvent.objects.filter(object_id=str(job.pk)).values_list("action", "actor_label")) >= {
        ("restore.queue", "api token restore drill"),
        ("restore.succeeded", "worker"),
    }
    # Its page names the person the token belongs to.
    assert job.requested_by.username == "token-owner"


def test_progress_shows_while_queued_and_the_report_once_a_worker_ran_it(
    client, backup, restorer, monkeypatch, new_databases
):
    monkeypatch.setattr(Conf, "SYNC", False)  # left on the queue, for the worker below
    new_databases.append("shop_queued")

    answer = post_restore(client, restorer, backup=backup.pk, mode="full", database="shop_queued")

    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    url = answer["Location"]
    queued = client.get(url, headers=bearer(restorer)).json()
    assert (queued["status"], queued["steps"], queued["started_at"]) == ("queued", [], None)
    listed = client.get("/api/v1/restores?status=queued", headers=bearer(restorer)).json()
    assert [r["id"] for r in listed["results"]] == [queued["id"]] and listed["count"] == 1

    tasks.run_restore(queued["id"])  # as the worker does

    done = client.get(url, headers=bearer(restorer)).json()
    assert done["status"] == "succeeded" and done["duration_seconds"] > 0
    assert done["report"]["total_seconds"] > 0 and len(done["steps"]) == 4
    assert client.get("/api/v1/restores?status=queued", headers=bearer(restorer)).json()["count"] == 0
    by_backup = client.get(f"/api/v1/restores?backup={backup.pk}", headers=bearer(restorer)).json()
    assert [r["status"] for r in by_backup["results"]] == ["succeeded"]


def test_the_existing_database_is_changed_only_with_its_name_repeated_and_after_a_safety_backup(
    client, backup, restorer, pg_database
):
    name = pg_database["dbname"]
    at_backup = rows(pg_database, "orders")
    execute_sql(pg_database, "DELETE FROM orders WHERE id <= 50; UPDATE customers SET name = 'kept'")
    changed_customers = rows(pg_database, "customers")

    refused = post_restore(client, restorer, backup=backup.pk, target="existing", mode="full", tables=["public.orders"])
    wrong = post_restore(
        client,
        restorer,
        backup=backup.pk,
        target="existing",
        mode="full",
        tables=["public.orders"],
        confirm_database="production",
    )

    for answer in (refused, wrong):
        assert answer.status_code == 409
        assert answer.json()["error"].startswith(f"This restore changes the existing database {name}: repeat its name")
        assert f'"confirm_database": "{name}"' in answer.json()["error"]
    assert not RestoreJob.objects.exists() and len(rows(pg_database, "orders")) == 250

    plan = post_restore(
        client,
        restorer,
        backup=backup.pk,
        target="existing",
        mode="full",
        tables=["public.orders"],
        confirm_database=name,
        dry_run=True,
    ).json()
    assert plan["started"] is False and plan["changes_existing_database"] and plan["safety_backup"]
    assert plan["confirm_database"] == name and plan["action"] == "Replace 1 table"
    assert not RestoreJob.objects.exists()

    answer = post_restore(
        client,
        restorer,
        backup=backup.pk,
        target="existing",
        mode="full",
        tables=["public.orders"],
        confirm_database=name,
    )

    assert answer.status_code == 202, answer.content
    detail = client.get(answer["Location"], headers=bearer(restorer)).json()
    assert detail["status"] == "succeeded", detail["summary"]
    assert [step["name"] for step in detail["steps"]][:2] == ["checks", "safety backup"]
    safety = Backup.objects.get(pk=detail["safety_backup"])
    assert safety.status == "succeeded" and safety.pinned and safety.label == f"before-restore-{detail['id']}"
    assert rows(pg_database, "orders") == at_backup
    assert rows(pg_database, "customers") == changed_customers  # not chosen: untouched
    assert detail["report"]["row_counts"] == {"public.orders": {"backup": 300, "restored": 300}}


def test_a_preview_of_the_existing_database_compares_and_changes_nothing(client, backup, restorer, pg_database):
    execute_sql(pg_database, "DELETE FROM orders WHERE id IN (1, 2, 3); UPDATE orders SET total = 0 WHERE id = 9")
    before = {table: rows(pg_database, table) for table in ("customers", "orders")}

    answer = post_restore(client, restorer, backup=backup.pk, target="existing")

    assert answer.status_code == 202, answer.content
    detail = client.get(answer["Location"], headers=bearer(restorer)).json()
    assert detail["status"] == "succeeded" and detail["mode"] == "preview" and detail["safety_backup"] is None
    compared = {t["table"]: t for t in detail["report"]["tables"]}
    assert (compared["public.orders"]["only_in_backup"], compared["public.orders"]["differ"]) == (3, 1)
    assert compared["public.customers"]["differ"] == 0
    assert detail["summary"].endswith("Nothing was changed.")
    assert {table: rows(pg_database, table) for table in before} == before


def test_refusals_are_json_with_the_right_status(client, backup, restorer, pg_database):
    assert post_restore(client, restorer, backup=999999).status_code == 404
    assert post_restore(client, restorer, backup=backup.pk, restore_server=4242).json() == {
        "error": "No restore server with id 4242."
    }
    assert client.get("/api/v1/restores/999999", headers=bearer(restorer)).status_code == 404
    bad = post_restore(client, restorer, backup=backup.pk, mode="replace")
    assert bad.status_code == 400 and bad.json()["error"] == "mode must be one of preview, merge, full."
    assert post_restore(client, restorer, backup=backup.pk, databse="x").status_code == 400
    assert post_restore(client, restorer, backup="1").status_code == 400
    exists = post_restore(client, restorer, backup=backup.pk, mode="full", database=pg_database["dbname"])
    assert exists.status_code == 409 and "already exists" in exists.json()["error"]
    no_table = post_restore(client, restorer, backup=backup.pk, tables=["public.nope"])
    assert no_table.status_code == 409 and no_table.json()["error"] == "The backup has no table public.nope."
    Backup.objects.filter(pk=backup.pk).update(status=Backup.FAILED)
    gone = post_restore(client, restorer, backup=backup.pk, mode="full", database="never_made")
    assert gone.status_code == 409 and "no stored copy" in gone.json()["error"]
    assert not RestoreJob.objects.exists()


def test_restores_need_the_restore_scope_and_reading_them_the_read_scope(client, backup):
    _, operator = make_token(scopes=["read", "backup"], name="deployer")
    _, restore_only = make_token(scopes=["restore"], name="restore only")

    refused = post_restore(client, operator, backup=backup.pk)
    assert refused.status_code == 403 and "'restore' scope" in refused.json()["error"]
    assert client.get("/api/v1/restores", headers=bearer(restore_only)).status_code == 403
    assert client.get("/api/v1/restores", headers=bearer(operator)).json()["count"] == 0
    assert client.get("/api/v1/restores").status_code == 401
    assert AuditEvent.objects.filter(action="api.restore_start", changes__status=403).count() == 1


def test_no_answer_holds_a_secret(client, backup, new_databases, pg_database):
    server = RestoreServer.objects.create(
        name="Standby", host=pg_database["host"], port=pg_database["port"], user=pg_database["user"]
    )
    _, raw = make_token(scopes=["read", "restore"])
    new_databases.append("shop_on_standby")
    answers = [
        post_restore(client, raw, backup=backup.pk, restore_server=server.pk),
        post_restore(client, raw, backup=backup.pk, restore_server=server.pk, mode="full", database="shop_on_standby"),
        post_restore(client, raw, backup=backup.pk, target="existing", mode="merge"),
    ]
    job = RestoreJob.objects.get()
    answers += [
        client.get(f"/api/v1/restores/{job.pk}", headers=bearer(raw)),
        client.get("/api/v1/restores", headers=bearer(raw)),
    ]

    assert [a.status_code for a in answers] == [200, 202, 409, 200, 200]
    assert answers[3].json()["restore_server"] == {"id": server.pk, "name": "Standby"}
    for answer in answers:
        assert PASSWORD not in answer.content.decode() and raw not in answer.content.decode()
