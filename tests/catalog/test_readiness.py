"""/healthz says the web process answers; /readyz whether Strongroom can
work now, check by check, with 503 for a load balancer while one fails. Both
are public, so neither names a host, a path or an error's text."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from catalog import readiness
from catalog.schedules import TICK_SCHEDULE, ensure_system_schedules

pytestmark = pytest.mark.django_db


def test_a_working_strongroom_is_ready(client, settings, tmp_path):
    ensure_system_schedules()

    answer = client.get("/readyz")

    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"database", "broker", "monitor", "disk"}
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

    answer = client.get("/readyz")

    assert answer.status_code == 503
    broker = answer.json()["checks"]["broker"]
    assert broker == {"ok": False, "detail": "the task queue's broker (Redis) does not answer"}
