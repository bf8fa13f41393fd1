"""Each host's own queue and the heartbeats, with real `manage.py qcluster`
processes on the test database: a cluster says it is alive where every host
reads it, and work queued for one host runs on that host only."""

import time

import pytest
from django_q.conf import Conf

from catalog import queues
from catalog.models import WorkerHeartbeat
from tests.harness.worker import Worker, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_for(predicate, timeout=30, what="it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def start_cluster(tmp_path, monkeypatch):
    """start_cluster(host, queue_name) -> a qcluster as that host, on that queue."""
    from django.db import connection

    monkeypatch.setattr(Conf, "SYNC", False)
    started = []

    def start(host, cluster_name=None):
        env = {"STRONGROOM_HOST": host, "WORKER_HEARTBEAT_SECONDS": "1"}
        if cluster_name:
            env["Q_CLUSTER_NAME"] = cluster_name
        log = tmp_path / f"{host}-{cluster_name or 'work'}.log"
        worker = Worker(database_url(connection.settings_dict), log, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def test_each_cluster_records_its_heartbeat_as_its_host_and_queue(start_cluster):
    start_cluster("host-a")
    start_cluster("host-a", "strongroom-host")

    def both_beat():
        return {(beat.host, beat.queue) for beat in queues.alive_heartbeats()} == {
            ("host-a", "strongroom"),
            ("host-a", "strongroom-host-host-a"),
        }

    wait_for(both_beat, what="both clusters' heartbeats")
    first = WorkerHeartbeat.objects.get(queue="strongroom").last_seen
    wait_for(lambda: WorkerHeartbeat.objects.get(queue="strongroom").last_seen > first, what="a second beat")
    assert queues.work_hosts() == ["host-a"]
    assert queues.hosts_with_own_queue() == ["host-a"]


def test_work_queued_for_a_host_runs_on_that_host_only(start_cluster):
    """record_heartbeat is a task that writes where it ran: the host it names
    is the host of the worker that took it."""
    start_cluster("host-a", "strongroom-host")
    start_cluster("host-b", "strongroom-host")
    start_cluster("host-b")  # a free work cluster elsewhere takes nothing meant for host-a
    wait_for(lambda: queues.hosts_with_own_queue() == ["host-a", "host-b"], what="both hosts' own queues")

    for n in range(3):
        queues.enqueue_on_host("host-a", "catalog.queues.record_heartbeat", f"probe-{n}", task_name=f"probe-{n}")
    wait_for(lambda: WorkerHeartbeat.objects.filter(queue__startswith="probe-").count() == 3, what="the probes")

    assert set(WorkerHeartbeat.objects.filter(queue__startswith="probe-").values_list("host", flat=True)) == {"host-a"}


def test_a_host_whose_workers_stopped_is_no_longer_offered(start_cluster, settings):
    worker = start_cluster("host-a", "strongroom-host")
    wait_for(lambda: queues.hosts_with_own_queue() == ["host-a"], what="host-a's heartbeat")
    worker.kill()
    settings.WORKER_SILENCE_SECONDS = 3

    wait_for(lambda: queues.hosts_with_own_queue() == [], timeout=10, what="host-a's silence")
