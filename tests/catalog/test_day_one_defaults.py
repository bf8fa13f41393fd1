"""Defaults that keep data and say what is true (issue 20): manual backups
have a retention rule of their own, a pruned backup is not shown as
succeeded, a source is new until its first good backup, and a restore into
an existing database starts at Preview with a button that says what it does."""

import sqlite3
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import backup_runs, lifecycle, services, tasks
from catalog.engine import manifest
from catalog.models import AuditEvent, Backup, Copy, Source
from catalog.retention import GFS, LAST, Candidate, Policy, select
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UTC = ZoneInfo("UTC")


# --- the rule, pure ------------------------------------------------------------


def scheduled(days_ago, number, hour=2):
    return Candidate(id=number, created_at=NOW.replace(hour=hour) - timedelta(days=days_ago), good=True)


def manual(minutes_ago, number, what="manual backup", keep_until=None):
    return Candidate(
        id=number, created_at=NOW - timedelta(minutes=minutes_ago), good=True, manual=what, keep_until=keep_until
    )


def fates(decisions):
    return {d.candidate.id: d.explain() for d in decisions}


def test_the_default_rule_keeps_every_manual_backup_of_the_day():
    # Last night's scheduled run, then three "Back up now" the same morning:
    # GFS alone keeps one backup a day, and pruned two of them by the next run.
    candidates = [scheduled(0, 1), manual(180, 2), manual(120, 3, "backup labelled pre-migration"), manual(60, 4)]
    decided = fates(select(candidates, Policy(), UTC, NOW))
    assert decided == {
        4: "manual backup, kept until 2026-12-25",
        3: "backup labelled pre-migration, kept until 2026-12-25",
        2: "manual backup, kept until 2026-12-25",
        # The scheduled one keeps its place in the rule: the manual ones take none.
        1: "daily #1, weekly 2026-W48, monthly 2026-11, yearly 2026",
    }


def test_a_manual_backup_joins_the_plans_rule_once_its_time_is_up():
    candidates = [scheduled(0, 1), scheduled(31, 2), manual(31 * 24 * 60 + 60, 3)]  # on day 31, after the run
    decided = fates(select(candidates, Policy(mode=LAST, last=1), UTC, NOW))
    assert decided[3] == "manual backup, kept until 2026-11-24; then older than the last 1"
    assert decided[2] == "older than the last 1"
    assert decided[1] == "last #1"


def test_a_keep_date_asked_for_wins_over_the_plans_manual_rule():
    short = manual(3 * 24 * 60, 2, keep_until=NOW - timedelta(days=2))  # asked for one day
    long = manual(60 * 24 * 60, 3, "backup labelled before-upgrade", keep_until=NOW + timedelta(days=300))
    decided = fates(select([scheduled(0, 1), short, long], Policy(mode=LAST, last=1), UTC, NOW))
    assert decided[2].startswith("manual backup, kept until 2026-11-23; then older than")
    assert decided[3] == "backup labelled before-upgrade, kept until 2027-09-21"
    off = fates(select([scheduled(0, 1), manual(60, 2)], Policy(mode=LAST, last=1, manual_days=0), UTC, NOW))
    assert off[2] == "last #1" and off[1] == "older than the last 1"  # 0: the rule judges them at once


@st.composite
def mixed_histories(draw):
    """Scheduled backups over a year and manual ones over the last 60 days."""
    candidates = []
    for number, minutes in enumerate(draw(st.lists(st.integers(0, 365 * 24 * 60), max_size=25)), start=1):
        candidates.append(
            Candidate(
                id=number, created_at=NOW - timedelta(minutes=minutes), good=draw(st.booleans()) or draw(st.booleans())
            )
        )
    for number, minutes in enumerate(draw(st.lists(st.integers(0, 60 * 24 * 60), max_size=10)), start=100):
        candidates.append(
            Candidate(id=number, created_at=NOW - timedelta(minutes=minutes), good=True, manual="manual backup")
        )
    return candidates


policies = st.builds(
    Policy,
    mode=st.sampled_from([GFS, LAST]),
    daily=st.integers(0, 8),
    weekly=st.integers(0, 4),
    monthly=st.integers(0, 4),
    yearly=st.integers(0, 2),
    last=st.integers(0, 8),
    minimum=st.integers(0, 3),
    manual_days=st.integers(0, 45),
)


@settings(max_examples=150, deadline=None)
@given(mixed_histories(), policies)
def test_manual_backups_in_their_time_are_kept_and_thin_no_scheduled_one(candidates, policy):
    decisions = fates(select(candidates, policy, UTC, NOW))
    within = [
        c
        for c in candidates
        if c.manual and policy.manual_days and c.created_at + timedelta(days=policy.manual_days) > NOW
    ]
    assert all(
        decisions[c.id].startswith("manual backup, kept until") and "; then" not in decisions[c.id] for c in within
    )
    # The good scheduled backups meet the same fate as if those manual ones did not exist.
    alone = fates(select([c for c in candidates if c not in within], policy, UTC, NOW))
    for candidate in candidates:
        if not candidate.manual and candidate.good:
            assert decisions[candidate.id] == alone[candidate.id] or {decisions[candidate.id], alone[candidate.id]} == {
                "newest good backup",
                "newest good backup under the plan's rule",
            }


# --- Back up now, retention and the pages ------------------------------------------


@pytest.fixture
def sqlite_plan(db, tmp_path):
    database = tmp_path / "inventory.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE stock (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO stock (name) VALUES (?)", [(f"item {i}",) for i in range(50)])
    source = services.save_source(
        "test", Source(name="Inventory", engine="sqlite", sqlite_path=str(database), port=None)
    )
    # The model's defaults: GFS 30 daily, 12 weekly…, and manual backups kept 30 days.
    return make_plan(
        source,
        [local_destination(tmp_path / "backups")],
        format="sqlite",
        verify_new_backups=False,
        restore_test_days=0,
        checksum_all_days=0,
    )


def back_up_now(plan, label="", keep_days=None):
    """What the worker does for "Back up now": the backup, then the plan's retention."""
    backup = backup_runs.create_backup("admin", plan, label=label, keep_days=keep_days)
    assert tasks.run_backup(backup.pk) == Backup.SUCCEEDED
    return Backup.objects.get(pk=backup.pk)


@pytest.mark.django_db(transaction=True)
def test_back_up_now_backups_survive_the_next_runs_of_the_default_rule(sqlite_plan, tmp_path, admin_client):
    first = back_up_now(sqlite_plan)
    labelled = back_up_now(sqlite_plan, label="pre-migration")
    last = back_up_now(sqlite_plan)
    lifecycle.prune_plan("retention", sqlite_plan)  # and the nightly prune

    for backup in (first, labelled, last):
        backup.refresh_from_db()
        assert not backup.is_pruned(), backup.prune_reason
        copy = backup.copies.get()
        assert copy.status == Copy.DURABLE and (tmp_path / "backups" / copy.key).is_file()
    assert not AuditEvent.objects.filter(action="backup.prune").exists()

    until = (labelled.created_at + timedelta(days=30)).astimezone(lifecycle.local_zone()).strftime("%Y-%m-%d")
    page = admin_client.get(sqlite_plan.get_absolute_url()).content.decode()
    assert f"backup labelled pre-migration, kept until {until}" in page  # the dry run, with its reason
    assert "manual backups kept 30 days" in page
    detail = admin_client.get(labelled.get_absolute_url()).content.decode()
    assert "Retention keeps this backup labelled pre-migration until" in detail


@pytest.mark.django_db(transaction=True)
def test_back_up_now_asks_how_long_to_keep_it(sqlite_plan, tmp_path, admin_client):
    form = admin_client.get(sqlite_plan.get_absolute_url()).content.decode()
    assert 'name="keep_days"' in form and 'placeholder="keep 30 days"' in form

    response = admin_client.post(f"/plans/{sqlite_plan.pk}/run/", {"label": "pre-migration", "keep_days": "90"})
    backup = Backup.objects.get()
    assert response.status_code == 302 and backup.label == "pre-migration"
    assert backup.keep_until == backup.created_at + timedelta(days=90)
    queued = AuditEvent.objects.get(action="backup.queue", object_id=str(backup.pk))
    assert queued.changes["keep_until"] == backup.keep_until.isoformat()
    # The manifest says so too, so that a catalog rebuilt from it keeps it as long.
    stored = manifest.loads((tmp_path / "backups" / backup.copies.get().manifest_key).read_bytes())
    assert stored["keep_until"] == backup.keep_until.isoformat()

    refused = admin_client.post(f"/plans/{sqlite_plan.pk}/run/", {"keep_days": "0"}, follow=True).content.decode()
    assert "Keep it for a whole number of days, from 1 to 36500" in refused
    assert Backup.objects.count() == 1


def test_the_plan_form_sets_the_manual_rule_and_the_dry_run_shows_it(admin_client, sqlite_plan):
    page = admin_client.get(f"/plans/{sqlite_plan.pk}/edit/").content.decode()
    assert 'name="keep_manual_days"' in page and "Keep manual backups (days)" in page

    preview = admin_client.post(
        "/plans/retention-preview/",
        {
            "plan_id": sqlite_plan.pk,
            "retention_mode": "gfs",
            "keep_daily": 30,
            "keep_weekly": 12,
            "keep_monthly": 12,
            "keep_yearly": 5,
            "keep_last": 7,
            "keep_days": 30,
            "keep_minimum": 1,
            "keep_manual_days": 7,
        },
    ).content.decode()
    assert (
        "Dry run</strong> of “30 daily, 12 weekly, 12 monthly, 5 yearly; at least 1; manual backups kept 7 days”"
        in preview
    )

    form = {
        "name": sqlite_plan.name,
        "source": sqlite_plan.source_id,
        "schedule": "30 2 * * *",
        "format": "sqlite",
        "compression": "zstd",
        "encrypt": "on",
        "destinations": [d.pk for d in sqlite_plan.destinations.all()],
        "enabled": "on",
        "retention_mode": "gfs",
        "keep_daily": 30,
        "keep_weekly": 12,
        "keep_monthly": 12,
        "keep_yearly": 5,
        "keep_last": 7,
        "keep_days": 30,
        "keep_minimum": 1,
        "keep_manual_days": 7,
        "restore_test_days": 0,
        "checksum_all_days": 0,
    }
    assert admin_client.post(f"/plans/{sqlite_plan.pk}/edit/", form).status_code == 302
    sqlite_plan.refresh_from_db()
    assert sqlite_plan.keep_manual_days == 7
    update = AuditEvent.objects.filter(action="plan.update").latest("pk")
    assert "keep_manual_days" in update.changes
    assert admin_client.post(f"/plans/{sqlite_plan.pk}/edit/", {**form, "keep_manual_days": 99999}).status_code == 200


def test_a_pruned_backup_is_not_shown_as_succeeded(admin_client, sqlite_plan):
    backup = Backup.objects.create(
        source=sqlite_plan.source,
        plan=sqlite_plan,
        format="sqlite",
        compression="zstd",
        status=Backup.SUCCEEDED,
        trigger="schedule",
        pruned_at=timezone.now(),
        prune_reason="older than the last 7",
    )
    Source.objects.filter(pk=sqlite_plan.source_id).update(status="up")
    for url in ("/backups/", backup.get_absolute_url(), "/", sqlite_plan.source.get_absolute_url()):
        page = admin_client.get(url).content.decode()
        assert '<span class="badge status-pruned"' in page and ">Pruned</span>" in page, url
        assert "status-succeeded" not in page, url


# --- a new source is new ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_source_is_new_until_its_first_good_backup(sqlite_plan, admin_client):
    source = Source.objects.get(pk=sqlite_plan.source_id)
    assert source.status == "new" and source.status_reason == "Waiting for its first good backup."
    dashboard = admin_client.get("/").content.decode()
    assert "The source is new" in dashboard and "is safe" not in dashboard
    assert '<span class="badge health-new">New</span>' in dashboard and "health-up" not in dashboard
    assert "Late in" in dashboard  # what comes next is said, without calling anything up
    detail = admin_client.get(source.get_absolute_url()).content.decode()
    assert '<span class="badge health-new">New</span>' in detail and "Waiting for its first good backup." in detail

    back_up_now(sqlite_plan)
    source.refresh_from_db()
    assert source.status == "up"
    assert "The source is safe" in admin_client.get("/").content.decode()
    assert list(source.status_changes.values_list("old_status", "new_status")) == [("new", "up")]


# --- restore into an existing database ----------------------------------------------------


@pytest.fixture
def pg_backup(db, pg_database, tmp_path):
    source = pg_source(pg_database)
    plan = make_plan(source, [local_destination(tmp_path / "b")])
    return Backup.objects.create(
        source=source,
        plan=plan,
        format="custom",
        compression="zstd",
        status=Backup.SUCCEEDED,
        trigger="schedule",
        table_counts={"public.orders": 10, "public.customers": 3, "public.notes": 1},
    )


def wizard_to_mode(client, backup, tables=()):
    client.get(f"/restores/new/?backup={backup.pk}")
    client.post("/restores/new/what/", {"backup": backup.pk})
    client.post("/restores/new/where/", {"target": "existing"})
    scope = {"scope": "some", "tables": list(tables)} if tables else {"scope": "all"}
    assert client.post("/restores/new/scope/", scope)["Location"] == "/restores/new/mode/"


def review_button(client):
    page = client.get("/restores/new/review/").content.decode()
    return page.split('<button type="submit" class="', 1)[1].split("</button>", 1)[0]


def test_a_restore_into_the_existing_database_starts_at_preview(admin_client, pg_backup):
    wizard_to_mode(admin_client, pg_backup)
    page = admin_client.get("/restores/new/mode/").content.decode()
    assert 'value="preview" checked' in page
    assert 'value="full" checked' not in page and 'value="merge" checked' not in page
    # Straight to the review without choosing: nothing is changed.
    assert review_button(admin_client) == 'primary">Preview differences'


@pytest.mark.parametrize(
    "mode, tables, button",
    [
        ("preview", ["public.orders", "public.notes"], 'primary">Preview differences'),
        ("merge", ["public.orders", "public.notes"], 'danger">Merge missing rows into 2 tables'),
        ("full", ["public.orders", "public.notes"], 'danger">Replace 2 tables'),
        ("full", [], 'danger">Replace the whole database'),
        ("merge", [], 'danger">Merge missing rows into the whole database'),
    ],
)
def test_the_review_button_says_what_will_happen(admin_client, pg_backup, mode, tables, button):
    wizard_to_mode(admin_client, pg_backup, tables)
    admin_client.post("/restores/new/mode/", {"mode": mode})
    assert review_button(admin_client) == button


def test_a_restore_into_a_new_database_says_so(admin_client, pg_backup):
    admin_client.get(f"/restores/new/?backup={pg_backup.pk}")
    admin_client.post("/restores/new/what/", {"backup": pg_backup.pk})
    admin_client.post("/restores/new/where/", {"target": "new", "database": "orders_copy"})
    admin_client.post("/restores/new/scope/", {"scope": "all"})
    assert review_button(admin_client) == 'primary">Restore into a new database'
    job = RestoreJob(
        backup=pg_backup,
        source=pg_backup.source,
        target=RestoreJob.EXISTING,
        mode=RestoreJob.FULL,
        tables=["public.orders"],
    )
    assert job.action_label() == "Replace 1 table"
