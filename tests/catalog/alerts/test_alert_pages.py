"""The alerts page, the health on a source's page, and the monitoring fields
of the source and plan forms."""

import pytest
import time_machine

from catalog.alerts import health, problems
from catalog.alerts.models import Alert
from catalog.models import AuditEvent, BackupPlan, Source
from tests.catalog.alerts.helpers import HOUR, T0, finished_backup
from tests.factories import recorded_plan, recorded_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def problems_seen(db):
    """A source that went down, a warning, and a problem already resolved."""
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        recorded_plan(source)
        traveller.move_to(T0 + 26 * HOUR)
        health.check_deadlines()
        problems.open_alert(
            Alert.SIZE_ANOMALY,
            "plan:99",
            title="Backup #7 of plan Weekly is 61 % smaller than usual",
            detail="142.0 MB, 61 % below the median",
            url="/plans/99/",
            severity=Alert.WARNING,
        )
        problems.open_alert(
            Alert.STORAGE_FULL,
            "destination:5",
            title="Destination Old NAS is above 80 %",
            detail="The disk is 91 % full",
            url="/destinations/5/",
            severity=Alert.WARNING,
        )
        problems.resolve_alert(Alert.STORAGE_FULL, "destination:5", "Old NAS is below 80 % again.")
    return source


def test_it_lists_open_problems_critical_first_then_resolved_ones(admin_client, problems_seen):
    page = admin_client.get("/alerts/").content.decode()
    assert page.index("Inventory DB is DOWN") < page.index("61 % smaller than usual") < page.index("Recently resolved")
    assert page.index("Recently resolved") < page.index("Destination Old NAS is above 80 %")
    assert "Old NAS is below 80 % again." in page
    assert f'href="/sources/{problems_seen.pk}/"' in page and "No good backup yet" in page
    assert 'href="/channels/"' in page and "What opens an alert" in page


def test_an_auditor_reads_the_alerts_without_the_channels_link(auditor_client, problems_seen):
    response = auditor_client.get("/alerts/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Inventory DB is DOWN" in page and 'href="/channels/"' not in page


def test_it_says_when_nothing_is_wrong(admin_client):
    page = admin_client.get("/alerts/").content.decode()
    assert "No open problem" in page and "Nothing resolved yet." in page


def test_the_source_page_shows_its_health_deadlines_and_timeline(auditor_client, problems_seen):
    response = auditor_client.get(f"/sources/{problems_seen.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="badge health-down"' in page
    assert "No good backup yet; the first was due by 2026-03-03 03:00 UTC (grace 2 h)." in page
    assert 'late after <span title="2026-03-03T03:00:00+00:00">3 Mar 2026 03:00</span>' in page
    assert 'down after <span title="2026-03-03T05:00:00+00:00">3 Mar 2026 05:00</span>' in page
    # Never up: new until a first good backup (issue 20), then down when none came.
    assert page.count('<span class="badge health-new">New</span> → <span class="badge health-down">Down</span>') == 1
    assert '<span class="badge health-up">Up</span>' not in page


def source_form(source, **changes):
    return {
        "name": source.name,
        "engine": "sqlite",
        "sqlite_path": source.sqlite_path,
        "grace_minutes": source.grace_minutes,
        **changes,
    }


def test_an_administrator_sets_the_grace_and_pauses_monitoring(admin_client, problems_seen):
    source = problems_seen
    with time_machine.travel(T0 + 26 * HOUR, tick=False):
        admin_client.post(f"/sources/{source.pk}/edit/", source_form(source, grace_minutes="180"))
        source.refresh_from_db()
        assert source.grace_minutes == 180 and source.status == "late"
        assert not Alert.objects.filter(kind=Alert.SOURCE_HEALTH, resolved_at__isnull=True).exists()

        admin_client.post(f"/sources/{source.pk}/edit/", source_form(source, paused="on"))
        source.refresh_from_db()
        assert source.paused and source.status == "paused"
    assert AuditEvent.objects.filter(action="source.update", changes__paused=True).exists()


def test_an_empty_grace_keeps_the_current_one(admin_client):
    response = admin_client.post(
        "/sources/new/", {"name": "Orders", "engine": "sqlite", "sqlite_path": "/srv/orders.sqlite3"}
    )
    assert response.status_code == 302
    assert Source.objects.get(name="Orders").grace_minutes == 120


def test_the_plan_form_sets_the_size_tolerance(admin_client):
    plan = recorded_plan(recorded_source())
    page = admin_client.get(f"/plans/{plan.pk}/edit/").content.decode()
    assert 'name="size_tolerance_percent"' in page
    form = {
        "name": plan.name,
        "source": plan.source_id,
        "schedule": plan.schedule,
        "format": "sqlite",
        "compression": "zstd",
        "destinations": [d.pk for d in plan.destinations.all()],
        "enabled": "on",
        "size_tolerance_percent": "25",
        "retention_mode": "gfs",
        "keep_daily": "30",
        "keep_weekly": "12",
        "keep_monthly": "12",
        "keep_yearly": "5",
        "keep_last": "7",
        "keep_days": "30",
        "keep_minimum": "1",
        "restore_test_days": "0",
        "checksum_all_days": "0",
    }
    assert admin_client.post(f"/plans/{plan.pk}/edit/", form).status_code == 302
    assert BackupPlan.objects.get(pk=plan.pk).size_tolerance_percent == 25
    del form["size_tolerance_percent"]
    admin_client.post(f"/plans/{plan.pk}/edit/", form)
    assert BackupPlan.objects.get(pk=plan.pk).size_tolerance_percent == 25  # left empty: kept


def test_a_new_good_backup_shows_up_again_on_the_source_page(admin_client, problems_seen):
    plan = problems_seen.plans.get()
    with time_machine.travel(T0 + 27 * HOUR, tick=False):
        finished_backup(plan)
    page = admin_client.get(f"/sources/{problems_seen.pk}/").content.decode()
    assert 'class="badge health-up"' in page
    assert '<span class="badge health-down">Down</span> → <span class="badge health-up">Up</span>' in page
