"""When drills are due and overdue, the tick that queues them on the work
cluster (once), and the overdue alert that opens and resolves."""

from datetime import timedelta

import pytest
import time_machine
from django_q.conf import Conf
from django_q.models import OrmQ

from catalog import tasks
from catalog.alerts import hooks
from catalog.alerts.models import Alert
from catalog.models import AuditEvent
from drills import schedule as drill_schedule
from drills import services as drills
from drills.models import Drill, DrillSchedule
from tests.catalog.alerts.helpers import T0, dispatched, finished_backup  # noqa: F401 — dispatched is a fixture
from tests.factories import recorded_plan, recorded_source

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


@pytest.fixture
def source():
    source = recorded_source(rto_minutes=240)
    plan = recorded_plan(source)
    backup = finished_backup(plan, at=T0, minutes=5)  # the first good backup ends at T0 + 5 min
    assert backup.finished_at == T0 + timedelta(minutes=5)
    return source


FIRST_GOOD = T0 + timedelta(minutes=5)


def kind_status(source, kind):
    return drill_schedule.status_of(source, kind)


def test_it_creates_the_guides_schedule_on_first_use(source):
    assert not DrillSchedule.objects.exists()
    schedule = drill_schedule.schedule_of(source)
    assert (
        schedule.checksum_every_days,
        schedule.partial_every_days,
        schedule.full_every_days,
        schedule.automatic,
    ) == (30, 91, 365, True)


def test_each_kind_is_due_its_period_after_the_first_good_backup_and_overdue_a_day_later(source):
    for kind, days in (("checksum", 30), ("partial", 91), ("full", 365)):
        status = kind_status(source, kind)
        due = FIRST_GOOD + timedelta(days=days)
        assert status.due_at == due and status.overdue_at == due + DAY
        assert not status.is_due(due - timedelta(seconds=1))
        assert status.is_due(due) and not status.is_overdue(due)
        assert not status.is_overdue(due + DAY - timedelta(seconds=1))
        assert status.is_overdue(due + DAY)


def test_it_counts_from_the_last_passed_drill_and_ignores_failed_ones(source):
    passed_at = T0 + timedelta(days=20)
    Drill.objects.create(source=source, kind="checksum", status=Drill.PASSED, performed_at=passed_at)
    Drill.objects.create(source=source, kind="checksum", status=Drill.FAILED, performed_at=passed_at + 5 * DAY)
    status = kind_status(source, "checksum")
    assert status.due_at == passed_at + timedelta(days=30)
    assert status.last.status == Drill.FAILED and status.last_passed.performed_at == passed_at


def test_nothing_is_due_before_the_first_good_backup():
    source = recorded_source(name="Empty")
    recorded_plan(source, name="Empty nightly")
    assert all(status.due_at is None and not status.is_due() for status in drill_schedule.statuses_of(source))


@pytest.fixture
def queued(monkeypatch):
    """Tasks go to the broker instead of running inline: [(cluster, function, args)]."""
    monkeypatch.setattr(Conf, "SYNC", False)
    return lambda: sorted(
        (q.key, q.func(), tuple(q.task["args"])) for q in OrmQ.objects.all() if q.func().startswith("drills.")
    )


def test_the_tick_queues_each_due_drill_once_on_the_work_cluster(source, queued, django_capture_on_commit_callbacks):
    with time_machine.travel(FIRST_GOOD + timedelta(days=30), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            first = tasks.tick()["drills"]["queued"]
        assert len(first) == 1
        drill = Drill.objects.get()
        assert (drill.kind, drill.status, drill.how) == ("checksum", Drill.QUEUED, Drill.AUTOMATIC)
        assert queued() == [("strongroom", "drills.tasks.run_drill", (drill.pk,))]

        with django_capture_on_commit_callbacks(execute=True):
            again = tasks.tick()["drills"]["queued"]
        assert again == [] and Drill.objects.count() == 1 and len(queued()) == 1

    with time_machine.travel(FIRST_GOOD + timedelta(days=365), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.tick()
        # The first checksum drill no worker took was given up; each kind is queued once more.
        assert Drill.objects.get(pk=drill.pk).status == Drill.FAILED
        waiting = Drill.objects.filter(status=Drill.QUEUED).values_list("kind", flat=True)
        assert sorted(waiting) == ["checksum", "full", "partial"]
    event = AuditEvent.objects.filter(action="drill.run").first()
    assert event.actor_label == "schedule" and event.changes["trigger"] == "schedule"


def test_the_tick_leaves_a_manual_schedule_alone_and_does_not_retry_a_failure_every_minute(source, queued):
    schedule = drill_schedule.schedule_of(source)
    schedule.automatic = False
    schedule.save()
    assert drills.queue_due_drills(FIRST_GOOD + timedelta(days=400)) == []

    schedule.automatic = True
    schedule.save()
    Drill.objects.create(
        source=source,
        kind="checksum",
        status=Drill.FAILED,
        created_at=FIRST_GOOD + timedelta(days=31),
        performed_at=FIRST_GOOD + timedelta(days=31),
    )
    with time_machine.travel(FIRST_GOOD + timedelta(days=31, hours=23), tick=False):
        assert "checksum" not in kinds_queued()
    with time_machine.travel(FIRST_GOOD + timedelta(days=32, minutes=1), tick=False):
        assert "checksum" in kinds_queued()


def kinds_queued():
    return [Drill.objects.get(pk=pk).kind for pk in drills.queue_due_drills()]


def test_a_drill_no_worker_took_is_given_up_after_a_day(source, queued):
    with time_machine.travel(T0 + timedelta(days=40), tick=False):
        drill = drills.create_drill("test", source, "checksum")
    with time_machine.travel(T0 + timedelta(days=41, minutes=1), tick=False):
        assert drills.sweep_stale_drills() == [drill.pk]
    drill.refresh_from_db()
    assert drill.status == Drill.FAILED and "is the task cluster running" in drill.summary


def drill_alerts(calls):
    return [call for call in calls if call[0] == Alert.DRILL_OVERDUE]


def test_an_overdue_drill_alerts_and_resolves_when_one_passes(source, dispatched, admin_user):  # noqa: F811
    schedule = drill_schedule.schedule_of(source)
    schedule.automatic = False  # drills are recorded by hand here
    schedule.save()
    key = f"drill:{source.pk}:checksum"
    overdue_at = FIRST_GOOD + timedelta(days=31)

    with time_machine.travel(overdue_at - timedelta(seconds=1), tick=False):
        hooks.periodic_checks()
    assert drill_alerts(dispatched) == []

    with time_machine.travel(overdue_at, tick=False):
        hooks.periodic_checks()
        hooks.periodic_checks()  # found again: updated, not sent twice
    assert drill_alerts(dispatched) == [(Alert.DRILL_OVERDUE, key, "opened")]
    alert = Alert.objects.get(kind=Alert.DRILL_OVERDUE)
    assert alert.title == "Checksum verification of Inventory DB is overdue" and alert.source == source
    assert alert.url == f"/drills/sources/{source.pk}/" and "none has passed yet" in alert.detail

    with time_machine.travel(overdue_at + timedelta(hours=2), tick=False):
        drills.record_manual_drill(
            admin_user,
            source,
            kind="checksum",
            performed_at=overdue_at + timedelta(hours=1),
            minutes=12,
            passed=True,
            notes="Read every copy back by hand.",
        )
    assert drill_alerts(dispatched)[-1] == (Alert.DRILL_OVERDUE, key, "resolved")
    alert.refresh_from_db()
    assert alert.resolved_at and "passed on" in alert.resolution


def test_a_paused_source_raises_no_drill_alert(source, dispatched):  # noqa: F811
    source.paused = True
    source.save()
    with time_machine.travel(FIRST_GOOD + timedelta(days=400), tick=False):
        hooks.periodic_checks()
    assert drill_alerts(dispatched) == []


def test_a_drill_whose_worker_died_is_failed_once_its_job_has_ended(source):
    from catalog.models import Verification

    backup = source.backups.get()
    started = T0 + timedelta(days=40)
    job = Verification.objects.create(
        backup=backup, source=source, kind="restore", status="running", started_at=started, heartbeat_at=started
    )
    drill = Drill.objects.create(
        source=source, kind="full", status=Drill.RUNNING, performed_at=started, verification=job, created_at=started
    )
    with time_machine.travel(started + timedelta(hours=1), tick=False):
        assert drills.sweep_stale_drills() == []  # the verification's own sweep watches it while it runs
        Verification.objects.filter(pk=job.pk).update(status="failed", finished_at=started + timedelta(minutes=59))
        assert drills.sweep_stale_drills() == []  # just ended: the worker may be judging the drill right now
    with time_machine.travel(started + timedelta(hours=2), tick=False):
        assert drills.sweep_stale_drills() == [drill.pk]
    drill.refresh_from_db()
    assert drill.status == Drill.FAILED and "stopped responding" in drill.summary
    assert AuditEvent.objects.filter(action="drill.failed", object_id=str(drill.pk)).exists()
