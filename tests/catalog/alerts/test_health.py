"""Source health: up → late → down at exactly the configured moments, failing,
paused, new, recovery, and a tick that stays cheap whatever the history."""

from datetime import timedelta

import pytest
import time_machine

from catalog import backup_runs, services
from catalog.alerts import health, hooks
from catalog.alerts.models import Alert, Notification, StatusChange
from catalog.models import AuditEvent, Backup, BackupPlan, Source
from tests.catalog.alerts.helpers import HOUR, T0, dispatched, finished_backup, reload  # noqa: F401 — dispatched is a fixture
from tests.factories import recorded_plan, recorded_source

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)


def statuses(source):
    return [
        (c.old_status, c.new_status) for c in StatusChange.objects.filter(source=source).order_by("created_at", "id")
    ]


def health_events(dispatched):
    return [call for call in dispatched if call[0] == Alert.SOURCE_HEALTH]


def test_it_derives_the_expected_interval_from_the_cron_schedule(db):
    assert BackupPlan(schedule="0 3 * * *").expected_interval(start=T0) == 24 * HOUR
    assert BackupPlan(schedule="0 3 * * 1-5").expected_interval(start=T0) == 72 * HOUR
    assert BackupPlan(schedule="15 * * * *").expected_interval(start=T0) == HOUR
    assert BackupPlan(schedule="not a schedule").expected_interval(start=T0) is None


def test_it_takes_the_tightest_enabled_plan_of_a_source(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        recorded_plan(source, name="Nightly", schedule="0 3 * * *")
        recorded_plan(source, name="Hourly", schedule="0 * * * *", enabled=False)
        assert source.expected_interval() == 24 * HOUR
        recorded_plan(source, name="Six-hourly", schedule="0 */6 * * *")
        assert source.expected_interval() == 6 * HOUR


def test_it_goes_late_at_24_h_and_down_at_26_h_then_back_up(db, dispatched):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, at=T0)
        source = reload(source)
        assert source.status == "up" and source.last_good_at == T0
        assert (source.late_at, source.down_at) == (T0 + 24 * HOUR, T0 + 26 * HOUR)

        for moment, expected in [
            (24 * HOUR - SECOND, "up"),
            (24 * HOUR, "late"),
            (26 * HOUR - SECOND, "late"),
            (26 * HOUR, "down"),
        ]:
            traveller.move_to(T0 + moment)
            health.check_deadlines()
            assert reload(source).status == expected, moment
        assert health.check_deadlines() == []  # nothing more to do on the next tick

        source = reload(source)
        assert source.status_since == T0 + 26 * HOUR
        assert source.status_reason == "No good backup for 26 h; expected every 24 h (grace 2 h)."
        alert = Alert.objects.get(kind=Alert.SOURCE_HEALTH, resolved_at__isnull=True)
        assert alert.title == "Inventory DB is DOWN" and alert.key == f"source:{source.pk}"
        assert alert.severity == Alert.CRITICAL and alert.url == f"/sources/{source.pk}/"
        assert "No good backup for 26 h" in alert.detail and "Down since 2026-03-03 05:00 UTC" in alert.detail

        traveller.move_to(T0 + 27 * HOUR)
        finished_backup(plan, at=T0 + 27 * HOUR)
        source = reload(source)
        assert source.status == "up" and source.late_at == T0 + 51 * HOUR
        alert.refresh_from_db()
        assert alert.resolved_at == T0 + 27 * HOUR and "Inventory DB is up again" in alert.resolution

    assert statuses(source) == [("new", "up"), ("up", "late"), ("late", "down"), ("down", "up")]
    late = StatusChange.objects.get(source=source, new_status="late")
    assert late.created_at == T0 + 24 * HOUR
    # The reason says what happened; the pages show the deadlines beside it (issue 20: one thing once).
    assert late.reason == "No good backup for 24 h; expected every 24 h (grace 2 h)."
    assert Alert.objects.filter(kind=Alert.SOURCE_HEALTH).count() == 1
    assert health_events(dispatched) == [
        (Alert.SOURCE_HEALTH, alert.key, Notification.OPENED),
        (Alert.SOURCE_HEALTH, alert.key, Notification.RESOLVED),
    ]
    assert AuditEvent.objects.filter(action="source.status", actor_label="monitor").count() == 4
    assert (
        AuditEvent.objects.filter(action__in=["alert.opened", "alert.resolved"], object_id=str(alert.pk)).count() == 2
    )


def test_it_counts_from_the_plan_before_the_first_good_backup(db):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        recorded_plan(source)
        # New, not up, until its first good backup (issue 20); the deadlines count from the plan.
        assert reload(source).status == "new" and reload(source).late_at == T0 + 24 * HOUR
        traveller.move_to(T0 + 26 * HOUR)
        health.check_deadlines()
    source = reload(source)
    assert source.status == "down"
    assert source.status_reason.startswith("No good backup yet; the first was due by 2026-03-03 03:00 UTC")


def test_it_follows_the_grace_set_on_the_source(db):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source(grace_minutes=30)
        recorded_plan(source)
        traveller.move_to(T0 + 24 * HOUR + 30 * 60 * SECOND)
        health.check_deadlines()
        assert reload(source).status == "down"
        source = reload(source)
        source.grace_minutes = 240
        services.save_source("test", source, changed_fields=["grace_minutes"])
        assert reload(source).status == "late" and reload(source).down_at == T0 + 28 * HOUR


def test_it_is_failing_on_a_failed_backup_and_keeps_one_alert_through_down(db, dispatched):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, at=T0)
        traveller.move_to(T0 + 20 * HOUR)
        failed = finished_backup(plan, status=Backup.FAILED, at=T0 + 20 * HOUR, error="disk I/O error")
        source = reload(source)
        assert source.status == "failing" and source.last_run_failed
        assert source.status_reason == f"Backup #{failed.pk} of plan Nightly failed: disk I/O error"
        alert = Alert.objects.get(kind=Alert.SOURCE_HEALTH)
        assert alert.title == "Inventory DB is FAILING" and "disk I/O error" in alert.detail

        # Failing outranks the deadlines: the tick leaves it alone.
        traveller.move_to(T0 + 30 * HOUR)
        assert health.check_deadlines() == []
        assert reload(source).status == "failing"

        # A partial run is not a failure, but not a good backup either: down.
        finished_backup(plan, status=Backup.PARTIAL, at=T0 + 30 * HOUR)
        assert reload(source).status == "down"
        traveller.move_to(T0 + 31 * HOUR)
        again = finished_backup(plan, status=Backup.FAILED, at=T0 + 31 * HOUR, error="database is locked")
        assert reload(source).status == "failing"

    alert = Alert.objects.get(kind=Alert.SOURCE_HEALTH)  # still the one alert
    assert alert.is_open() and alert.title == "Inventory DB is FAILING"
    assert f"Backup #{again.pk} of plan Nightly failed: database is locked" in alert.detail
    assert "This problem has been open since 2026-03-02 23:00 UTC" in alert.detail
    assert statuses(source) == [("new", "up"), ("up", "failing"), ("failing", "down"), ("down", "failing")]
    assert [event for _, _, event in health_events(dispatched)] == [Notification.OPENED]


def test_a_newer_failure_updates_the_reason_without_a_new_status_change(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, status=Backup.FAILED, error="first")
        second = finished_backup(plan, status=Backup.FAILED, at=T0 + SECOND, error="second")
    source = reload(source)
    assert source.status_reason == f"Backup #{second.pk} of plan Nightly failed: second"
    assert statuses(source) == [("new", "failing")]  # never up: no good backup yet (issue 20)
    assert "second" in Alert.objects.get(kind=Alert.SOURCE_HEALTH).detail


def test_a_cancelled_backup_says_nothing_about_health(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, status=Backup.FAILED, error="boom")
        finished_backup(plan, status=Backup.CANCELLED, at=T0 + SECOND)
    assert reload(source).status == "failing"


def test_a_paused_source_never_alerts_and_pausing_resolves_quietly(db, dispatched):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        traveller.move_to(T0 + 26 * HOUR)
        health.check_deadlines()
        assert reload(source).status == "down"

        source = reload(source)
        source.paused = True
        services.save_source("test", source, changed_fields=["paused"])
        assert reload(source).status == "paused"
        assert not Alert.objects.filter(resolved_at__isnull=True).exists()

        finished_backup(plan, status=Backup.FAILED, error="boom")
        traveller.move_to(T0 + 80 * HOUR)
        health.check_deadlines()
        assert reload(source).status == "paused"

    # The resolution was quiet: only a PagerDuty incident it opened would be closed.
    assert [event for _, _, event in health_events(dispatched)] == [Notification.OPENED, "resolved quietly"]
    assert Alert.objects.get(kind=Alert.SOURCE_HEALTH).resolution.startswith("Inventory DB: Monitoring is paused")
    assert statuses(source)[-1] == ("down", "paused")


def test_a_source_without_an_enabled_plan_is_new(db):
    with time_machine.travel(T0, tick=False):
        source = recorded_source()
        assert reload(source).status == "new"
        plan = recorded_plan(source, enabled=False)
        assert reload(source).status == "new" and reload(source).late_at is None
        plan.enabled = True
        services.save_plan("test", plan, changed_fields=["enabled"])
        # Still new until its first good backup (issue 20), but now with deadlines.
        assert reload(source).status == "new" and reload(source).late_at == T0 + 24 * HOUR
        assert reload(source).status_reason == "Waiting for its first good backup."
        services.delete_plan("test", plan)
    source = reload(source)
    assert source.status == "new" and source.late_at is None and source.down_at is None
    assert source.status_reason == "No enabled plan: no backup is expected of this source yet."
    assert statuses(source) == []


def test_the_sweep_of_a_dead_backup_makes_the_source_fail(db, settings):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        backup = Backup.objects.create(
            source=source,
            plan=plan,
            status=Backup.RUNNING,
            format="sqlite",
            compression="zstd",
            started_at=T0,
            heartbeat_at=T0,
        )
        traveller.move_to(T0 + timedelta(seconds=settings.HEARTBEAT_TIMEOUT + 1))
        assert backup_runs.sweep_stale_backups() == [backup.pk]
    source = reload(source)
    assert source.status == "failing" and "The worker stopped responding" in source.status_reason


def test_monitoring_trouble_never_fails_a_backup(db, monkeypatch):
    source = recorded_source()
    plan = recorded_plan(source)

    def broken(*args, **kwargs):
        raise RuntimeError("monitoring bug")

    monkeypatch.setattr(Source, "health_at", broken)
    backup = finished_backup(plan, status=Backup.FAILED, error="boom")  # the hook swallows the error
    assert reload(backup).status == Backup.FAILED
    assert reload(source).status == "new" and not reload(source).last_run_failed  # rolled back, not half-written


def test_the_tick_query_count_does_not_grow_with_the_history(
    db, django_assert_max_num_queries, django_assert_num_queries
):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        Backup.objects.bulk_create(
            [
                Backup(
                    source=source,
                    plan=plan,
                    status=Backup.SUCCEEDED,
                    format="sqlite",
                    compression="zstd",
                    created_at=T0 - day * 24 * HOUR,
                    started_at=T0 - day * 24 * HOUR,
                    finished_at=T0 - day * 24 * HOUR,
                )
                for day in range(200)
            ]
        )
        health.refresh_source(source)
        traveller.move_to(T0 + 10 * HOUR)
        with django_assert_num_queries(2):
            assert health.check_deadlines() == []  # nobody due: just the two indexed queries
        traveller.move_to(T0 + 26 * HOUR)
        # A handful of writes (status change, hash-chained audit event, alert),
        # the same with 200 backups as with 2: nothing per backup.
        with django_assert_max_num_queries(30):
            assert health.check_deadlines() == [source.pk]
    assert reload(source).status == "down"


def test_the_tick_judges_sources_that_were_never_judged_or_changed_in_the_admin(db):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        recorded_plan(source)
        # As the 0005 migration leaves a source that already had plans, or an
        # edit in the Django admin that bypasses the services.
        Source.objects.filter(pk=source.pk).update(status="new", late_at=None, down_at=None)
        other = recorded_source("Orders")
        Source.objects.filter(pk=other.pk).update(paused=True)
        traveller.move_to(T0 + HOUR)
        assert sorted(hooks.periodic_checks()["refreshed"]) == sorted([source.pk, other.pk])
        assert hooks.periodic_checks()["refreshed"] == []
    assert reload(source).status == "new" and reload(source).late_at == T0 + 24 * HOUR
    assert reload(other).status == "paused"


@pytest.mark.django_db(transaction=True)
def test_the_tick_tells_a_channel_once_when_a_source_goes_down_and_once_when_it_is_back(httpserver, settings):
    from catalog import tasks
    from catalog.alerts.models import Channel
    from tests.catalog.alerts.channel_helpers import make_channel

    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"), secrets={"secret": "a-webhook-secret"})
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, at=T0)
        for hours in (24, 26, 26.5):
            traveller.move_to(T0 + hours * HOUR)
            tasks.tick()
        traveller.move_to(T0 + 27 * HOUR)
        finished_backup(plan)

    bodies = [request.get_data(as_text=True) for request, _ in httpserver.log]
    health_bodies = [body for body in bodies if "Inventory DB is DOWN" in body]
    assert len(health_bodies) == 2  # the problem, then its recovery
    assert "No good backup for 26 h" in health_bodies[0] and "a-webhook-secret" not in "".join(bodies)
    assert reload(source).status == "up"


def test_a_backup_under_way_at_its_deadline_keeps_the_source_up_but_not_past_down(db):
    with time_machine.travel(T0, tick=False) as traveller:
        source = recorded_source()
        plan = recorded_plan(source)
        finished_backup(plan, at=T0)
        traveller.move_to(T0 + 24 * HOUR - 10 * SECOND)
        running = Backup.objects.create(
            source=source,
            plan=plan,
            status=Backup.RUNNING,
            format="sqlite",
            compression="zstd",
            started_at=T0 + 24 * HOUR - 10 * SECOND,
        )
        traveller.move_to(T0 + 24 * HOUR + 5 * 60 * SECOND)
        assert health.check_deadlines() == []
        health.refresh_source(source)  # e.g. a plan saved meanwhile
        assert reload(source).status == "up" and "is under way" in reload(source).status_reason

        traveller.move_to(T0 + 26 * HOUR)
        assert health.check_deadlines() == [source.pk]
        assert reload(source).status == "down"
        Backup.objects.filter(pk=running.pk).update(status=Backup.SUCCEEDED, finished_at=T0 + 26 * HOUR)
        hooks.backup_finished(running)
    assert statuses(source) == [("new", "up"), ("up", "down"), ("down", "up")]
