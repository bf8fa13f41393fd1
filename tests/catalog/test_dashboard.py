"""The dashboard answers "are we safe?" in one look; the plan page shows trends.
Sources are put in each health state through their stored monitoring fields,
as catalog.alerts.health leaves them."""

import importlib
import os
import re
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.utils import timezone

from catalog.models import Alert, Backup, Source, Verification
from tests.factories import local_destination, make_plan
from tests.support import log_in

SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand
MB = 2**20

STATES = {
    "Billing": ("up", "Last good backup started 2026-11-26 03:00 UTC; one is expected every 24 h.", 3),
    "Inventory": ("late", "No good backup for 25 h; expected every 24 h (grace 2 h).", 25),
    "Payroll": ("down", "No good backup for 40 h; expected every 24 h (grace 2 h).", 40),
    "Shop": ("failing", "Backup #7 of plan Shop nightly failed: pg_dump: connection refused", 5),
    "Wiki": ("paused", "Monitoring is paused for this source: it raises no alert.", None),
}


def page_text(client, url="/"):
    return client.get(url).content.decode().replace("\xa0", " ")


def add_source(name, disk, schedule="0 3 * * *", **health):
    source = Source.objects.create(
        name=name,
        slug=name.lower().replace(" ", "-"),
        engine="sqlite",
        sqlite_path=f"/srv/{name}.db",
        rpo_minutes=24 * 60,
        rto_minutes=60,
    )
    plan = make_plan(source, [disk], name=f"{name} nightly", format="sqlite", schedule=schedule)
    set_health(source, **health)
    return source, plan


def set_health(source, status="up", reason="", hours_since_good=None):
    """What the health module would have stored (after the plan was saved, so nothing recomputes it)."""
    now = timezone.now()
    last_good = now - timedelta(hours=hours_since_good) if hours_since_good is not None else None
    Source.objects.filter(pk=source.pk).update(
        status=status,
        status_reason=reason,
        status_since=now - timedelta(hours=1),
        last_good_at=last_good,
        late_at=(last_good or now) + timedelta(hours=24),
        down_at=(last_good or now) + timedelta(hours=26),
        paused=status == "paused",
        last_run_failed=status == "failing",
    )


@pytest.fixture
def disk(db, tmp_path):
    return local_destination(tmp_path / "disk", name="Local disk")


@pytest.fixture
def sources(disk):
    return {
        name: add_source(name, disk, status=status, reason=reason, hours_since_good=hours)
        for name, (status, reason, hours) in STATES.items()
    }


def test_it_says_all_sources_are_safe_when_they_are(disk, admin_client):
    for name in ("Billing", "Shop"):
        add_source(name, disk, status="up", reason="Fine.", hours_since_good=2)
    page = page_text(admin_client)
    assert "All 2 sources are safe" in page and "need attention" not in page
    assert "No open alerts" in page


def test_it_does_not_call_paused_or_new_sources_safe(disk, admin_client):
    add_source("Billing", disk, status="up", reason="Fine.", hours_since_good=2)
    add_source("Wiki", disk, status="paused", reason="Monitoring is paused.")
    add_source("Shop", disk, status="new", reason="No enabled plan.")
    page = page_text(admin_client)
    assert "No source needs attention" in page and "are safe" not in page
    assert "1 up" in page and "1 paused" in page and "1 new" in page


@pytest.mark.parametrize("client_name", ["admin_client", "auditor_client"])
def test_it_shows_each_sources_health_and_the_verdict(sources, client_name, request):
    page = page_text(request.getfixturevalue(client_name))
    assert "3 of 5 sources need attention" in page
    assert "1 down" in page and "1 failing" in page and "1 late" in page and "1 paused" in page
    for name, (status, reason, _) in STATES.items():
        source = sources[name][0]
        row = re.search(rf'<tr class="health-row health-row-{status}" data-source="{source.pk}">(.*?)</tr>', page, re.S)
        assert row, name
        assert f'<span class="badge health-{status}">{status.capitalize()}</span>' in row.group(1)
        if status == "up":
            # Up and on time, the cell says what comes next only: the last good
            # backup is the next column (issue 20: one thing once).
            assert reason not in row.group(1) and "Late in" in row.group(1)
        else:
            assert reason in row.group(1)
        assert "for 60 min" in row.group(1)


def test_it_counts_open_alerts_and_links_to_them(sources, admin_client):
    Alert.objects.create(kind=Alert.SOURCE_HEALTH, key="source:1", title="Payroll is down")
    Alert.objects.create(kind=Alert.STORAGE_FULL, key="destination:1", title="Disk is full")
    Alert.objects.create(kind=Alert.STUCK_JOB, key="backup:3", title="Old", resolved_at=timezone.now())
    page = page_text(admin_client)
    assert re.search(r'<a class="verdict-alerts" href="/alerts/"><strong>2 open alerts</strong>', page)


def test_it_measures_the_last_good_backup_against_the_rpo(sources, admin_client):
    page = page_text(admin_client)
    billing = sources["Billing"][0]
    row = re.search(rf'data-source="{billing.pk}">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'3 h ago</span>\s+<span class="muted">· RPO 24 h', row) and "over the RPO" not in row
    payroll = sources["Payroll"][0]
    row = re.search(rf'data-source="{payroll.pk}">(.*?)</tr>', page, re.S).group(1)
    assert "40 h ago" in row and "over the RPO" in row


def test_it_says_when_an_up_source_would_be_late(disk, admin_client):
    add_source("Billing", disk, status="up", reason="Fine.", hours_since_good=2)
    page = page_text(admin_client)
    assert re.search(r"Late in <span[^>]*>22 h</span>, down in <span[^>]*>24 h</span> without a good backup", page)


def test_sources_backed_up_before_monitoring_show_their_last_good_backup(disk, admin_client):
    source, plan = add_source("Billing", disk, status="new")
    started = timezone.now() - timedelta(hours=5)
    Backup.objects.create(
        source=source,
        plan=plan,
        format="sqlite",
        compression="zstd",
        status=Backup.SUCCEEDED,
        started_at=started,
        finished_at=started + timedelta(minutes=1),
        created_at=started,
    )
    # What migration 0005 does for sources that already had backups.
    importlib.import_module("catalog.migrations.0005_monitoring_and_api").record_last_good_backups(apps, None)
    assert "5 h ago" in page_text(admin_client)


def test_it_keeps_the_last_verified_restore_against_the_rto(sources, admin_client):
    source, plan = sources["Billing"]
    backup = Backup.objects.create(
        source=source,
        plan=plan,
        format="sqlite",
        compression="zstd",
        status=Backup.SUCCEEDED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    restore = Verification.objects.create(
        backup=backup,
        source=source,
        kind="restore",
        status="passed",
        finished_at=timezone.now(),
        restore_seconds=75 * 60,
    )
    page = page_text(admin_client)
    assert restore.get_absolute_url() in page and "1 h 15 min" in page and "over the 60 min RTO" in page


def test_it_lists_the_next_runs_of_enabled_plans_soonest_first(disk, admin_client):
    add_source("Billing", disk, schedule="0 3 * * *")
    add_source("Shop", disk, schedule="*/15 * * * *")
    source, plan = add_source("Wiki", disk, schedule="*/5 * * * *")
    plan.enabled = False
    plan.save()
    # At 10:07 the next runs are 10:15 (Shop) and 03:00 tomorrow (Billing); near 03:00 both would run at 03:00.
    with time_machine.travel(timezone.now().replace(hour=10, minute=7), tick=False):
        page = page_text(admin_client)
    section = page[page.index("Next scheduled runs") : page.index("<h2>Storage")]
    assert "Shop nightly" in section and "Billing nightly" in section and "Wiki nightly" not in section
    assert section.index("Shop nightly") < section.index("Billing nightly")


def test_its_queries_do_not_grow_with_backups_or_sources(disk, admin_client, django_assert_max_num_queries):
    source, plan = add_source("Source 0", disk)
    record(source, plan, 1)
    admin_client.get("/")  # the session and the site's caches
    with django_assert_max_num_queries(40) as one:
        admin_client.get("/")
    for i in range(1, 5):
        add_source(f"Source {i}", disk)
    for source in Source.objects.all():
        record(source, source.plans.get(), 50 if source.name != "Source 0" else 49)
    with django_assert_max_num_queries(len(one.captured_queries)):
        response = admin_client.get("/")
    assert response.content.decode().count('class="health-row ') == 5


def record(source, plan, count, start=None, sizes=None):
    start = start or timezone.now() - timedelta(days=count)
    backups = []
    for i in range(count):
        at = start + timedelta(days=i)
        size = sizes[i] if sizes else 100 * MB
        failed = sizes is not None and size == 0
        backups.append(
            Backup(
                source=source,
                plan=plan,
                format="sqlite",
                compression="zstd",
                created_at=at,
                status=Backup.FAILED if failed else Backup.SUCCEEDED,
                started_at=at,
                finished_at=at + timedelta(seconds=60 + size // MB),
                stored_bytes=size,
                raw_bytes=size * 3,
                error="disk full" if failed else "",
            )
        )
    Backup.objects.bulk_create(backups)


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_and_a_plans_trends_in_chromium(live_server, page, admin_user, tmp_path):
    disk = local_destination(tmp_path / "disk", name="Local disk")
    disk.quota_gb = 10
    disk.save()
    made = {name: add_source(name, disk, status=s, reason=r, hours_since_good=h) for name, (s, r, h) in STATES.items()}
    source, plan = made["Billing"]
    # A month of nightly backups growing slowly, one suspiciously small and one failed.
    sizes = [(400 + 3 * day) * MB for day in range(30)]
    sizes[21], sizes[26] = 90 * MB, 0
    record(source, plan, 30, sizes=sizes)
    Alert.objects.create(kind=Alert.SOURCE_HEALTH, key="source:payroll", title="Payroll is down")
    week_of_changes()
    log_in(page, live_server, admin_user)

    verdict = page.locator(".verdict")
    assert "3 of 5 sources need attention" in verdict.inner_text()
    assert "1 open alert" in verdict.inner_text()
    assert page.locator(".dashboard-sources .badge.health-down").is_visible()
    assert page.locator(".dashboard-next-runs tr").count() == 5
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/dashboard.png", full_page=True)
        page.locator(".dashboard-sources").screenshot(path=f"{SHOTS}/dashboard-sources.png")

    page.goto(f"{live_server.url}{plan.get_absolute_url()}")
    size_chart = page.locator("svg.chart").first
    size_chart.wait_for()
    assert size_chart.locator(".chart-series-stored circle").count() == 29
    assert size_chart.locator(".chart-series-stored circle.outlier").count() == 1
    assert size_chart.locator(".mark-failed").count() == 1
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/plan-trends.png", full_page=True)
        page.locator(".chart-grid").screenshot(path=f"{SHOTS}/plan-trends-charts.png")
    size_chart.locator(".chart-series-stored circle.outlier").click()  # a point opens its backup
    page.wait_for_url(f"{live_server.url}{Backup.objects.get(stored_bytes=90 * MB).get_absolute_url()}")


def week_of_changes():
    """A week in which each source went through its troubles, recovered, and came to its present state."""
    from catalog.alerts.models import StatusChange

    now = timezone.now()
    Source.objects.update(created_at=now - timedelta(days=30))
    StatusChange.objects.all().delete()
    for source in Source.objects.all():
        timeline = {
            "up": [(150, "up", "late"), (148, "late", "up"), (60, "up", "failing"), (40, "failing", "up")],
            "late": [(100, "up", "late"), (98, "late", "up"), (1, "up", "late")],
            "down": [(90, "up", "failing"), (80, "failing", "up"), (3, "up", "late"), (1, "late", "down")],
            "failing": [(1, "up", "failing")],
            "paused": [(1, "up", "paused")],
        }[source.status]
        for hours, old, new in timeline:
            StatusChange.objects.create(
                source=source, created_at=now - timedelta(hours=hours), old_status=old, new_status=new
            )


def test_it_draws_each_sources_health_over_the_last_week(sources, admin_client):
    from catalog.alerts.models import StatusChange

    payroll = sources["Payroll"][0]
    now = timezone.now()
    Source.objects.filter(pk=payroll.pk).update(created_at=now - timedelta(days=30))
    StatusChange.objects.all().delete()  # whatever saving the plan recorded
    for hours_ago, old, new in [(480, "new", "up"), (16, "up", "late"), (14, "late", "down")]:
        StatusChange.objects.create(
            source=payroll, created_at=now - timedelta(hours=hours_ago), old_status=old, new_status=new
        )
    page = page_text(admin_client)
    row = re.search(rf'data-source="{payroll.pk}">(.*?)</tr>', page, re.S).group(1)
    strip = re.search(r'<svg class="health-strip".*?</svg>', row, re.S).group(0)
    assert re.findall(r'<rect class="strip-(\w+)"', strip) == ["up", "late", "down"]
    assert "Late from" in strip and "(2 h)" in strip
