"""The first hour is quiet unless something is wrong (issue 20): a trial with
one local destination gets one 3-2-1 alert that says what to do, nothing is
"overdue" before its period has passed, and the dashboard's health cell says
each thing once."""

import re
from datetime import timedelta

import pytest
import time_machine

from catalog import services
from catalog.alerts import health, problems
from catalog.alerts.models import Alert, Notification
from catalog.models import Source, Verification
from tests.catalog.alerts.helpers import HOUR, T0, dispatched, finished_backup, reload  # noqa: F401 — dispatched is a fixture
from tests.factories import local_destination, recorded_plan, recorded_s3_destination, recorded_source

pytestmark = pytest.mark.django_db

DAY = 24 * HOUR


def open_alerts():
    return list(Alert.objects.filter(resolved_at__isnull=True))


def page_text(client, url="/"):
    return client.get(url).content.decode().replace("\xa0", " ")


def row_of(page, source):
    return re.search(rf'data-source="{source.pk}">(.*?)</tr>', page, re.S).group(1)


@pytest.fixture
def trial(db):
    """What a first afternoon looks like: one local destination, two sources,
    three plans, every backup good."""
    disk = local_destination("/srv/backups", name="Local backups")
    metadata, orders = recorded_source("Strongroom metadata"), recorded_source("Orders")
    plans = [
        recorded_plan(metadata, [disk], name="Daily metadata backup"),
        recorded_plan(orders, [disk], name="Orders nightly"),
        recorded_plan(orders, [disk], name="Orders hourly", schedule="0 * * * *"),
    ]
    backups = [finished_backup(plan) for plan in plans]
    return {"disk": disk, "plans": plans, "backups": backups}


def test_a_trial_with_one_local_destination_opens_one_alert_that_says_what_to_do(dispatched, trial):
    (alert,) = open_alerts()  # nothing else: the sources are up, nothing is overdue
    assert alert.kind == Alert.THREE_TWO_ONE and alert.title == "3 plans do not meet 3-2-1"
    first, second, third = trial["backups"]
    assert alert.detail.startswith(
        f"Daily metadata backup (backup #{first.pk}), Orders hourly (backup #{third.pk}) and Orders nightly "
        f"(backup #{second.pk}) lack a second copy (only 1); a second kind of storage or provider (e.g. local disk "
        "and S3, or S3 and Azure); an off-site copy."
    )
    assert (
        "To meet it: Add a destination of another kind, away from this machine (an S3, Azure or Google Cloud "
        "Storage bucket, or an SFTP server, marked off-site), on the Destinations page, and tick it in these plans."
    ) in alert.detail
    assert alert.url == "/plans/" and alert.source is None  # two sources' plans
    assert [event for kind, _, event in dispatched if kind == Alert.THREE_TWO_ONE] == [Notification.OPENED]

    # Once there is one, the alert names it.
    recorded_s3_destination()
    finished_backup(trial["plans"][0])
    assert "To meet it: Tick Off-site S3 in these plans (Edit, Destinations)." in reload(alert).detail


def test_the_alert_follows_the_plans_until_the_last_one_meets_3_2_1(dispatched, trial):
    s3 = recorded_s3_destination()
    metadata, nightly, hourly = trial["plans"]
    for plan in (metadata, nightly):
        plan.destinations.add(s3)
        finished_backup(plan)
    (alert,) = open_alerts()
    assert alert.title == "Plan Orders hourly does not meet 3-2-1" and alert.url == f"/plans/{hourly.pk}/"
    assert alert.source == hourly.source

    services.delete_plan("test", hourly)  # deleting (or disabling) the last one clears it
    assert open_alerts() == []
    assert reload(alert).resolution == "The latest backup of every enabled plan meets 3-2-1."
    assert [event for kind, _, event in dispatched if kind == Alert.THREE_TWO_ONE] == [
        Notification.OPENED,
        Notification.RESOLVED,
    ]


def test_the_old_alerts_one_per_plan_fold_into_the_one(db, dispatched):
    plan = recorded_plan(recorded_source())
    old, _ = problems.open_alert(
        Alert.THREE_TWO_ONE,
        f"plan:{plan.pk}",
        title="Plan Nightly does not meet 3-2-1",
        detail="Backup #1 lacks an off-site copy.",
        url="/plans/1/",
        severity=Alert.WARNING,
    )
    finished_backup(plan)
    assert [alert.key for alert in open_alerts()] == ["plans"]
    assert reload(old).resolved_at is not None
    assert (Alert.THREE_TWO_ONE, f"plan:{plan.pk}", "resolved quietly") in dispatched


def test_a_plan_that_has_not_run_yet_opens_nothing(db):
    recorded_plan(recorded_source())
    assert open_alerts() == []


def test_no_restore_test_is_overdue_before_its_period_has_passed(db, admin_client):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        recorded_plan(source, restore_test_days=7)
        traveller.move_to(T0 + 10 * 60 * timedelta(seconds=1))
        finished_backup(recorded_plan(source, name="Hourly", schedule="0 * * * *", restore_test_days=7))
        row = row_of(page_text(admin_client), source)
        assert "never" in row and "overdue" not in row

        traveller.move_to(T0 + 7 * DAY - HOUR)
        assert "overdue" not in row_of(page_text(admin_client), source)
        traveller.move_to(T0 + 7 * DAY + HOUR)  # a week after the plan was made, and still never tested
        assert "overdue" in row_of(page_text(admin_client), source)


def test_a_passed_restore_test_counts_from_when_it_passed(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        plan = recorded_plan(source, restore_test_days=7)
        backup = finished_backup(plan)
    tested = Verification.objects.create(
        backup=backup, source=source, kind="restore", status="passed", finished_at=T0 + DAY
    )
    assert not source.restore_test_overdue(tested, True, now=T0 + 8 * DAY - HOUR)
    assert source.restore_test_overdue(tested, True, now=T0 + 8 * DAY + HOUR)
    assert source.restore_test_overdue(None, True, now=T0 + 8 * DAY)
    assert not source.restore_test_overdue(None, False, now=T0 + 80 * DAY)  # nothing to test yet


def test_the_health_cell_says_each_thing_once(db, admin_client):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source(rpo_minutes=24 * 60)
        plan = recorded_plan(source)
        finished_backup(plan)
        traveller.move_to(T0 + 2 * HOUR)
        row = row_of(page_text(admin_client), source)
        cell = row.split('<td class="health-cell">', 1)[1].split("</td>", 1)[0]
        assert re.search(r"Late in <span[^>]*>22 h</span>, down in <span[^>]*>24 h</span> without a good backup", cell)
        assert "late after" not in cell and "down after" not in cell and "Last good backup started" not in cell
        # The source page says it in full, once: what happened, then the deadlines.
        page = page_text(admin_client, source.get_absolute_url())
        assert "Last good backup started 2026-03-02 03:00 UTC; one is expected every 24 h." in page
        assert page.count("late after") == 1 and page.count("down after") == 1

        traveller.move_to(T0 + 25 * HOUR)
        health.check_deadlines()
        assert reload(source).status == "late"
        cell = row_of(page_text(admin_client), source).split('<td class="health-cell">', 1)[1].split("</td>", 1)[0]
        assert "No good backup for 25 h; expected every 24 h (grace 2 h)." in cell
        assert cell.count("Down in") == 1 and "down at" not in cell and "unless one succeeds" not in cell


def test_a_new_source_waits_without_alarm(db, admin_client):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        recorded_plan(source)
        traveller.move_to(T0 + HOUR)
        assert health.check_deadlines() == []
        page = page_text(admin_client)
        assert "The source is new" in page and "is safe" not in page and "need attention" not in page
        row = row_of(page, source)
        assert '<span class="badge health-new">New</span>' in row and "Waiting for its first good backup." in row
        assert '<span class="muted">none yet</span>' in row  # no backup yet is not a warning yet
        assert open_alerts() == []

        # But a first backup that never comes still goes late, then down, and alerts.
        traveller.move_to(T0 + 26 * HOUR)
        health.check_deadlines()
    source = reload(source)
    assert source.status == "down" and [a.kind for a in open_alerts()] == [Alert.SOURCE_HEALTH]
    assert list(source.status_changes.values_list("old_status", "new_status")) == [("new", "down")]


def test_an_up_source_judged_before_new_existed_is_judged_again(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        recorded_plan(source)
        # As a source with a plan and no backup was left by the code before issue 20.
        Source.objects.filter(pk=source.pk).update(status="up", status_reason="Waiting for the first good backup.")
        assert health.refresh_misjudged() == [source.pk]
    assert reload(source).status == "new"
    assert health.refresh_misjudged() == []
