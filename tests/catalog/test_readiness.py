"""/healthz says the web process answers; /readyz whether Strongroom can
work now, check by check, with 503 for a load balancer while one fails. Both
are public, so neither names a host, a path or an error's text."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from catalog import queues, readiness
from catalog.models import WorkerHeartbeat
from catalog.schedules import TICK_SCHEDULE, ensure_system_schedules

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def work_cluster_beats(settings):
    """A work cluster's sentinel has said it is alive (catalog/brokers.py)."""
    queues.record_heartbeat(settings.WORK_CLUSTER)


def test_a_working_strongroom_is_ready(client, settings, tmp_path):
    ensure_system_schedules()

    answer = client.get("/readyz")

    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"database", "broker", "workers", "monitor", "disk"}
    assert body["checks"]["workers"]["detail"] == "task workers are running on 1 host"
    assert all(check["ok"] for check in body["checks"].values())
    assert str(settings.DATA_DIR) not in answer.content.decode()
    assert client.get("/healthz").json() == {"alive": True}


def test_a_silent_monitor_makes_it_not_ready_and_says_why(client):
    ensure_system_schedules()
    Schedule.objects.filter(name=TICK_SCHEDULE).update(next_run=timezone.now() - timedelta(minutes=20))

    answer = client.get("/readyz")

    assert answer.status_code == 503
    monitor = answer.json()["checks"]["monitor"]
    assert monitor["ok"] is False and "the monitoring workers are not running" in monitor["detail"]


def test_a_data_directory_nearly_full_makes_it_not_ready(client, monkeypatch):
    ensure_system_schedules()
    monkeypatch.setattr(readiness, "MIN_FREE_BYTES", 1 << 62)  # more than any disk has

    answer = client.get("/readyz")

    assert answer.status_code == 503
    disk = answer.json()["checks"]["disk"]
    assert disk["ok"] is False and "free in the data directory" in disk["detail"]


def test_a_broker_that_does_not_answer_makes_it_not_ready(client, settings, monkeypatch):
    from django_q.conf import Conf

    ensure_system_schedules()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", settings.REDIS_URL)
    monkeypatch.setattr(Conf, "BROKER_CLASS", "catalog.brokers.RedisWithHeartbeat")

    answer = client.get("/readyz")

    assert answer.status_code == 503
    broker = answer.json()["checks"]["broker"]
    assert broker == {"ok": False, "detail": "the task queue's broker (Redis) does not answer"}


def test_workers_silent_for_minutes_make_it_not_ready_and_say_since_when(client, settings):
    ensure_system_schedules()
    long_ago = timezone.now() - timedelta(seconds=settings.WORKER_SILENCE_SECONDS + 60)
    WorkerHeartbeat.objects.update(last_seen=long_ago)

    answer = client.get("/readyz")

    assert answer.status_code == 503
    workers = answer.json()["checks"]["workers"]
    assert workers == {
        "ok": False,
        "detail": f"no task workers since {long_ago:%Y-%m-%d %H:%M} UTC: nothing takes backups",
    }
    WorkerHeartbeat.objects.all().delete()
    assert client.get("/readyz").json()["checks"]["workers"]["detail"] == (
        "no task workers have ever run: nothing takes backups"
    )


def test_only_the_work_cluster_counts_as_task_workers(client, settings):
    """The monitor's or a host queue's workers do not take backups."""
    ensure_system_schedules()
    WorkerHeartbeat.objects.all().delete()
    queues.record_heartbeat(settings.MONITOR_CLUSTER)
    queues.record_heartbeat(settings.HOST_CLUSTER)

    assert client.get("/readyz").json()["checks"]["workers"]["ok"] is False
