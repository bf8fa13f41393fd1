"""The work cluster runs jobs; the monitor cluster runs the tick and alert
sending on a worker of its own (catalog/queues.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule

from catalog import backup_runs
from catalog.alerts import notify
from catalog.alerts.models import Alert, Notification
from catalog.schedules import TICK_SCHEDULE, ensure_system_schedules
from tests.factories import local_destination, make_plan, recorded_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """Tasks go to the broker instead of running inline; returns the queue
    each landed in."""
    monkeypatch.setattr(Conf, "SYNC", False)
    return lambda: sorted(OrmQ.objects.values_list("key", flat=True))


def test_it_queues_jobs_for_the_work_cluster_and_alerts_for_the_monitor(
    queued, tmp_path, django_capture_on_commit_callbacks
):
    plan = make_plan(recorded_source(), [local_destination(tmp_path)], format="sqlite")
    alert = Alert.objects.create(kind=Alert.SOURCE_HEALTH, key="source:1", title="Inventory DB is DOWN")
    with django_capture_on_commit_callbacks(execute=True):
        backup_runs.start_backup("test", plan)
        notify.dispatch(alert, Notification.OPENED)

    assert queued() == ["strongroom", "strongroom-monitor"]


def test_it_schedules_the_tick_on_the_monitor_cluster(db):
    Schedule.objects.filter(name=TICK_SCHEDULE).update(cluster=None)  # as made before the monitor cluster existed

    ensure_system_schedules()

    assert Schedule.objects.get(name=TICK_SCHEDULE).cluster == "strongroom-monitor"


def test_the_dashboard_says_when_monitoring_is_not_running(admin_client):
    ensure_system_schedules()
    Schedule.objects.filter(name=TICK_SCHEDULE).update(next_run=timezone.now())
    assert "Monitoring is not running" not in admin_client.get("/").content.decode()

    Schedule.objects.filter(name=TICK_SCHEDULE).update(next_run=timezone.now() - timedelta(minutes=12))
    page = admin_client.get("/").content.decode()
    assert "Monitoring is not running" in page and "Q_CLUSTER_NAME=strongroom-monitor" in page
