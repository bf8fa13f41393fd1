"""The drills pages: the source page's drill lines, the schedule and manual
forms for administrators, and nothing but 403 for auditors on every POST."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from catalog.models import AuditEvent
from drills import schedule as drill_schedule
from drills.models import Drill, DrillSchedule
from tests.catalog.alerts.helpers import finished_backup
from tests.factories import recorded_plan, recorded_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def source():
    source = recorded_source(rto_minutes=240)
    finished_backup(recorded_plan(source))
    return source


def manual_form(**fields):
    return {
        "kind": "full",
        "performed_at": "2026-08-02T09:30",
        "minutes": "41",
        "outcome": "passed",
        "notes": "Restored last night's backup onto the standby host; app smoke test passed.",
        **fields,
    }


def test_the_source_page_shows_the_last_full_drill_against_the_rto(admin_client, source, admin_user):
    Drill.objects.create(
        source=source,
        kind="full",
        how=Drill.MANUAL,
        status=Drill.PASSED,
        rto_minutes=240,
        performed_at=datetime(2026, 8, 2, 9, 30, tzinfo=UTC),
        seconds=41 * 60,
    )

    page = admin_client.get(source.get_absolute_url()).content.decode()

    assert "Last full drill: 2026-08-02, 41 min (RTO 4 h)" in page
    assert "Last partial drill: none yet" in page and "Last checksum drill: none yet" in page
    assert "next due 2027-08-02" in page


def test_an_overdue_drill_is_red_on_the_source_page(admin_client, source):
    Drill.objects.create(
        source=source,
        kind="checksum",
        status=Drill.PASSED,
        seconds=3,
        performed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    page = admin_client.get(source.get_absolute_url()).content.decode()
    assert '<span class="badge status-failed">overdue</span>' in page and "was due 2025-01-31" in page


def test_an_administrator_records_a_manual_drill(admin_client, source, admin_user):
    response = admin_client.post(reverse("drill_record", args=[source.pk]), manual_form())

    assert response.status_code == 302
    drill = Drill.objects.get()
    assert (drill.kind, drill.how, drill.status, drill.seconds, drill.rto_minutes, drill.performed_by) == (
        "full",
        Drill.MANUAL,
        Drill.PASSED,
        41 * 60,
        240,
        admin_user,
    )
    assert drill.performed_at == datetime(2026, 8, 2, 9, 30, tzinfo=UTC)
    event = AuditEvent.objects.get(action="drill.record")
    assert event.actor == admin_user and event.changes["minutes"] == 41 and event.changes["status"] == "passed"
    page = admin_client.get(reverse("drill_history", args=[source.pk])).content.decode()
    assert "standby host" in page and "41 min" in page


def test_a_manual_drill_in_the_future_is_refused_with_a_message(admin_client, source):
    response = admin_client.post(
        reverse("drill_record", args=[source.pk]), manual_form(performed_at="2099-01-01T00:00")
    )
    assert response.status_code == 400
    assert "recorded after it took place" in response.content.decode()
    assert not Drill.objects.exists() and not AuditEvent.objects.filter(action="drill.record").exists()


def test_an_administrator_edits_the_schedule(admin_client, source, admin_user):
    url = reverse("drill_schedule", args=[source.pk])
    response = admin_client.post(
        url, {"checksum_every_days": "7", "partial_every_days": "91", "full_every_days": "180"}
    )
    assert response.status_code == 302
    schedule = DrillSchedule.objects.get(source=source)
    assert (schedule.checksum_every_days, schedule.full_every_days, schedule.automatic) == (7, 180, False)
    event = AuditEvent.objects.get(action="drill.schedule.update")
    assert event.changes == {"checksum_every_days": 7, "full_every_days": 180, "automatic": False}

    bad = admin_client.post(url, {"checksum_every_days": "0", "partial_every_days": "91", "full_every_days": "180"})
    assert bad.status_code == 400 and "Between 1 and" in bad.content.decode()
    assert DrillSchedule.objects.get(source=source).checksum_every_days == 7


def test_run_now_without_a_good_backup_says_why(admin_client):
    source = recorded_source(name="Empty")
    response = admin_client.post(reverse("drill_run", args=[source.pk, "full"]), follow=True)
    assert "has no good backup with a stored copy yet" in response.content.decode()
    assert not Drill.objects.exists()


def test_auditors_read_every_drill_page_and_change_nothing(auditor_client, source):
    drill_schedule.schedule_of(source)
    for url in (reverse("drill_list"), reverse("drill_history", args=[source.pk]), source.get_absolute_url()):
        response = auditor_client.get(url)
        assert response.status_code == 200
        assert "Run now" not in response.content.decode() and "Record drill" not in response.content.decode()
    writes = {
        reverse("drill_record", args=[source.pk]): manual_form(),
        reverse("drill_schedule", args=[source.pk]): {
            "checksum_every_days": "1",
            "partial_every_days": "1",
            "full_every_days": "1",
            "automatic": "on",
        },
        **{reverse("drill_run", args=[source.pk, kind]): {} for kind in ("checksum", "partial", "full")},
    }
    for url, data in writes.items():
        assert auditor_client.post(url, data).status_code == 403, url
    assert not Drill.objects.exists() and DrillSchedule.objects.get().checksum_every_days == 30
    assert not AuditEvent.objects.filter(action__startswith="drill.").exists()


def test_the_drills_list_shows_every_source(auditor_client, source):
    recorded_source(name="Billing DB")
    page = auditor_client.get(reverse("drill_list")).content.decode()
    assert "Inventory DB" in page and "Billing DB" in page and "no good backup yet" in page
    due = (source.backups.get().finished_at + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"next {due}" in page
