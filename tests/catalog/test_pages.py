"""The browser pages, acted on through the test client, checked in the database."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.alerts.models import Channel
from catalog.api import tokens
from catalog.models import AuditEvent, Backup, BackupPlan, Destination, Source, Verification
from restore.models import RestoreJob
from tests.catalog.api.helpers import token_owner
from tests.factories import local_destination, make_plan, pg_source

SECRET = "Tr0ub4dor&3-not-shown"


@pytest.fixture
def setup(db, tmp_path, pg_server):
    source = pg_source({**pg_server, "dbname": "postgres"}, password=SECRET)
    destination = local_destination(tmp_path / "b")
    plan = make_plan(source, [destination])
    backup = Backup.objects.create(
        source=source, plan=plan, format="custom", compression="zstd", status=Backup.SUCCEEDED
    )
    verification = Verification.objects.create(backup=backup, source=source, kind="checksum", status="passed")
    restore = RestoreJob.objects.create(backup=backup, source=source, target_database="restored", status="succeeded")
    channel = Channel.objects.create(
        name="On-call mail", kind=Channel.EMAIL, email_to="oncall@example.org", events=["source_health"]
    )
    token, _ = tokens.create_token("test", "CI", ["read"], None, owner=token_owner())
    return {
        "source": source,
        "destination": destination,
        "plan": plan,
        "backup": backup,
        "verification": verification,
        "restore": restore,
        "channel": channel,
        "token": token,
    }


def urls(setup):
    s, d, p, b, v, r = (setup[k].pk for k in ("source", "destination", "plan", "backup", "verification", "restore"))
    reads = [
        "/",
        "/sources/",
        f"/sources/{s}/",
        "/destinations/",
        f"/destinations/{d}/",
        "/plans/",
        f"/plans/{p}/",
        "/plans/cron-preview/?schedule=0+3+*+*+*",
        "/backups/",
        f"/backups/{b}/",
        f"/backups/{b}/progress/",
        "/audit/",
        "/verifications/",
        f"/verifications/{v}/",
        f"/verifications/{v}/progress/",
        "/restores/",
        f"/restores/{r}/",
        f"/restores/{r}/progress/",
        "/alerts/",
        "/channels/",
        f"/channels/{setup['channel'].pk}/",
        "/tokens/",
    ]
    writes = [
        ("get", "/sources/new/"),
        ("get", f"/sources/{s}/edit/"),
        ("get", f"/sources/{s}/delete/"),
        ("post", "/sources/test/"),
        ("get", "/destinations/new/"),
        ("get", f"/destinations/{d}/edit/"),
        ("get", f"/destinations/{d}/delete/"),
        ("post", "/destinations/test/"),
        ("get", "/plans/new/"),
        ("get", f"/plans/{p}/edit/"),
        ("get", f"/plans/{p}/delete/"),
        ("post", f"/plans/{p}/run/"),
        ("post", f"/backups/{b}/cancel/"),
        ("post", "/plans/retention-preview/"),
        ("post", f"/plans/{p}/prune/"),
        ("post", f"/backups/{b}/pin/"),
        ("post", f"/backups/{b}/unpin/"),
        ("post", f"/destinations/{d}/scan/"),
        ("post", f"/destinations/{d}/orphans/remove/"),
        ("post", f"/backups/{b}/verify/"),
        ("post", f"/backups/{b}/test-restore/"),
        ("post", f"/verifications/{v}/cancel/"),
        ("get", "/restores/new/what/"),
        ("post", f"/restores/{r}/cancel/"),
        ("post", f"/backups/{b}/download/"),
        ("get", "/channels/new/"),
        ("get", f"/channels/{setup['channel'].pk}/edit/"),
        ("get", f"/channels/{setup['channel'].pk}/delete/"),
        ("get", "/tokens/new/"),
        ("post", f"/channels/{setup['channel'].pk}/test/"),
        ("post", f"/tokens/{setup['token'].pk}/revoke/"),
        ("get", f"/plans/tables/?source={s}&format=csv"),
    ]
    return reads, writes


def test_it_sends_anonymous_visitors_to_the_login_page(client, setup):
    reads, writes = urls(setup)
    for url in reads + [url for _, url in writes]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").json() == {"alive": True}


def test_it_lets_auditors_read_but_not_change(auditor_client, setup):
    reads, writes = urls(setup)
    for url in reads:
        assert auditor_client.get(url).status_code == 200, url
    for method, url in writes:
        assert getattr(auditor_client, method)(url).status_code == 403, url
    assert Backup.objects.count() == 1
    page = auditor_client.get(f"/plans/{setup['plan'].pk}/").content.decode()
    assert "Back up now" not in page and "Edit" not in page and "Apply retention" not in page
    page = auditor_client.get(f"/backups/{setup['backup'].pk}/").content.decode()
    assert "Pin" not in page


def test_it_lets_administrators_do_everything(admin_client, setup):
    reads, writes = urls(setup)
    for url in reads:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        title = re.search(r"<title>(.*?)</title>", response.content.decode(), re.S)
        assert title is None or "<" not in title.group(1), url  # a page's title is plain text
    for method, url in writes:
        if method == "get":
            assert admin_client.get(url).status_code == 200, url


def test_it_creates_a_source_and_never_shows_its_password(admin_client, pg_server):
    response = admin_client.post(
        "/sources/new/",
        {
            "name": "Orders",
            "engine": "postgresql",
            "host": pg_server["host"],
            "port": pg_server["port"],
            "dbname": "postgres",
            "user": "postgres",
            "password": SECRET,
        },
    )
    source = Source.objects.get(name="Orders")
    assert response.status_code == 302 and response["Location"] == f"/sources/{source.pk}/"
    assert source.slug == "orders" and source.secrets() == {"password": SECRET}
    assert SECRET not in source.secret_token
    for url in [f"/sources/{source.pk}/", f"/sources/{source.pk}/edit/", "/audit/", "/sources/"]:
        assert SECRET not in admin_client.get(url).content.decode()
    event = AuditEvent.objects.get(action="source.create")
    assert event.changes["password"] == "changed" and SECRET not in str(event.changes)


def test_it_keeps_the_stored_password_when_the_field_is_left_blank(admin_client, setup):
    source = setup["source"]
    admin_client.post(
        f"/sources/{source.pk}/edit/",
        {
            "name": source.name,
            "engine": "postgresql",
            "host": source.host,
            "port": source.port,
            "dbname": source.dbname,
            "user": "someone_else",
            "password": "",
        },
    )
    source.refresh_from_db()
    assert source.user == "someone_else" and source.secrets()["password"] == SECRET
    assert AuditEvent.objects.filter(action="source.update").get().changes == {"user": "someone_else"}


def test_it_explains_what_a_source_is_missing(admin_client):
    response = admin_client.post("/sources/new/", {"name": "Half", "engine": "postgresql", "host": "db"})
    assert response.status_code == 200
    assert "Required unless you give a connection string." in response.content.decode()
    assert not Source.objects.exists()


def test_it_tests_a_connection_from_the_form(admin_client, pg_server):
    form = {
        "name": "T",
        "engine": "postgresql",
        "host": pg_server["host"],
        "port": pg_server["port"],
        "user": "postgres",
    }
    ok = admin_client.post("/sources/test/", {**form, "dbname": "postgres"}).content.decode()
    assert "Connected: PostgreSQL" in ok
    missing = admin_client.post("/sources/test/", {**form, "dbname": "nope_not_here"}).content.decode()
    assert "Database nope_not_here does not exist" in missing
    assert not Source.objects.exists()


def test_it_tests_a_destination_with_a_probe(admin_client, tmp_path, s3_bucket):
    local = admin_client.post("/destinations/test/", {"name": "L", "kind": "local", "path": str(tmp_path / "x")})
    assert "Wrote, read and deleted a probe object" in local.content.decode()
    assert list((tmp_path / "x").iterdir()) == []
    missing = admin_client.post(
        "/destinations/test/",
        {
            "name": "S",
            "kind": "s3",
            "bucket": "not-there",
            "endpoint_url": s3_bucket["endpoint_url"],
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing-secret-xyz",
        },
    ).content.decode()
    assert "S3 bucket not-there does not exist" in missing and "testing-secret-xyz" not in missing


# What the plan form's retention fields send when left at their defaults.
RETENTION_DEFAULTS = {
    "retention_mode": "gfs",
    "keep_daily": "30",
    "keep_weekly": "12",
    "keep_monthly": "12",
    "keep_yearly": "5",
    "keep_last": "7",
    "keep_days": "30",
    "keep_minimum": "1",
    "verify_new_backups": "on",
    "restore_test_days": "7",
    "checksum_all_days": "30",
}


def test_it_creates_a_plan_with_its_schedule(admin_client, setup):
    response = admin_client.post(
        "/plans/new/",
        {
            "name": "Hourly",
            "source": setup["source"].pk,
            "schedule": "5  * * * *",
            "format": "custom",
            "compression": "zstd",
            "encrypt": "on",
            "destinations": [setup["destination"].pk],
            "enabled": "on",
            **RETENTION_DEFAULTS,
            "retention_mode": "last",
            "keep_last": "48",
        },
    )
    plan = BackupPlan.objects.get(name="Hourly")
    assert response.status_code == 302
    assert plan.schedule == "5 * * * *" and list(plan.destinations.all()) == [setup["destination"]]
    assert plan.retention_policy().describe() == "keep the last 48; at least 1"


def test_it_rejects_a_bad_schedule_and_a_format_the_engine_cannot_make(admin_client, setup):
    response = admin_client.post(
        "/plans/new/",
        {
            "name": "Bad",
            "source": setup["source"].pk,
            "schedule": "every day",
            "format": "sqlite",
            "compression": "zstd",
            "destinations": [setup["destination"].pk],
        },
    ).content.decode()
    assert "Use five fields" in response
    assert (
        "cannot produce “SQLite database file”; choose one of: “PostgreSQL custom (pg_dump -Fc)”, "
        "“PostgreSQL directory with parallel jobs (pg_dump -Fd -j)”, “Plain SQL”" in response
    )
    assert not BackupPlan.objects.filter(name="Bad").exists()


def test_it_previews_the_next_five_runs(admin_client):
    page = admin_client.get("/plans/cron-preview/?schedule=30+2+*+*+1").content.decode()
    assert len(re.findall(r"<li>Mon ", page)) == 5
    assert (
        "not a valid cron expression" in admin_client.get("/plans/cron-preview/?schedule=61+*+*+*+*").content.decode()
    )


def test_it_filters_and_pages_backups(admin_client, setup):
    now = timezone.now()
    for day in range(30):
        Backup.objects.create(
            source=setup["source"],
            plan=setup["plan"],
            format="custom",
            compression="zstd",
            status=Backup.FAILED if day % 3 == 0 else Backup.SUCCEEDED,
            created_at=now - timedelta(days=day),
        )
    failed = admin_client.get("/backups/?status=failed").content.decode()
    assert failed.count("status-failed") == 10
    first = admin_client.get("/backups/").content.decode()
    assert "Page 1 of 2" in first and "page=2" in first
    assert "?status=failed&amp;page=2" not in failed  # 10 fit on one page
    since = (now - timedelta(days=4)).date().isoformat()
    recent = admin_client.get(f"/backups/?since={since}").content.decode()
    assert len(re.findall(r'href="/backups/\d+/"', recent)) == 6  # five days of them and the fixture's


def test_rows_of_backups_cost_the_same_queries_however_many_people_ran_them(
    admin_client, setup, django_assert_max_num_queries
):
    """Each row names who ran the backup: joined, not one query per row (the
    load benchmark found the dashboard asking for each row's user)."""
    from django.contrib.auth.models import User

    pages = ["/", "/backups/", f"/plans/{setup['plan'].pk}/", f"/sources/{setup['source'].pk}/"]
    counts = {}
    for page in pages:
        admin_client.get(page)
        with django_assert_max_num_queries(100) as captured:
            admin_client.get(page)
        counts[page] = len(captured.captured_queries)
    for i in range(8):
        person = User.objects.create_user(f"operator{i}")
        Backup.objects.create(
            source=setup["source"],
            plan=setup["plan"],
            format="custom",
            compression="zstd",
            status=Backup.SUCCEEDED,
            triggered_by=person,
            log="a line of the job's log\n" * 1000,
        )
    for page in pages:
        with django_assert_max_num_queries(counts[page]) as captured:
            response = admin_client.get(page)
        assert "operator7" in response.content.decode(), page
        # The rows leave the job's log (it grows while a backup runs) in the database.
        assert not any(
            '"catalog_backup"."log"' in q["sql"]
            for q in captured.captured_queries
            if 'FROM "catalog_backup"' in q["sql"] and "LIMIT 1" not in q["sql"]
        ), page


def test_it_shows_a_backup_with_its_copies_and_counts(admin_client, setup):
    backup = setup["backup"]
    backup.table_counts = {"public.orders": 1234}
    backup.sha256 = "ab" * 32
    backup.save()
    backup.copies.create(destination=setup["destination"], key="x/y.dump.zst.enc", status="durable", size=2048)
    page = admin_client.get(f"/backups/{backup.pk}/").content.decode()
    assert "public.orders" in page and "1,234" in page and "ab" * 32 in page and "x/y.dump.zst.enc" in page


def test_it_queues_a_labelled_backup_and_refuses_a_second(admin_client, setup, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # leave it queued
    plan = setup["plan"]
    response = admin_client.post(f"/plans/{plan.pk}/run/", {"label": "pre-migration"})
    backup = plan.backups.get(status=Backup.QUEUED)
    assert response["Location"] == f"/backups/{backup.pk}/"
    assert (backup.label, backup.triggered_by.username) == ("pre-migration", "alice")
    again = admin_client.post(f"/plans/{plan.pk}/run/", {"label": ""}, follow=True).content.decode()
    assert "already queued or running" in again

    admin_client.post(f"/backups/{backup.pk}/cancel/")
    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert AuditEvent.objects.filter(action="backup.cancel", actor_label="alice").exists()


def test_it_refuses_to_delete_a_destination_in_use(admin_client, setup):
    destination = setup["destination"]
    page = admin_client.post(f"/destinations/{destination.pk}/delete/", follow=True).content.decode()
    assert "is used by the plan" in page
    assert Destination.objects.filter(pk=destination.pk).exists()
