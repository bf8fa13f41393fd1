"""Each backup runs exactly once: a plan triggered twice at the same moment
(two callers of the service, two POSTs of "Back up now"), a task delivered
twice at once, and two worker processes sharing one Redis queue."""

import threading

import pytest
from django.db import connection
from django.test import Client

from catalog import backup_runs, keyring, queues, services, tasks
from catalog.models import AuditEvent, Backup, Copy, Key
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import redis as redis_harness
from tests.harness.redis import redis_url  # noqa: F401 — a fixture
from tests.harness.sample_db import throwaway_tricky_database
from tests.support import files_under, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def source_database(pg_server):
    """Only read by the backups: one for the module."""
    with throwaway_tricky_database("sr_test_once", big_rows=200) as conninfo:
        yield conninfo


@pytest.fixture
def plan(source_database, tmp_path):
    return make_plan(pg_source(source_database), [local_destination(tmp_path / "b")])


def at_once(*calls, timeout=60):
    """Runs each call in its own thread, released together by a barrier;
    returns what each returned (or the exception it raised), in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as exc:  # the answer under test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a caller hung"
    return results


def test_two_first_encrypted_backups_at_once_make_one_master_key(settings, tmp_path):
    # Found by the load benchmark on a fresh install: both backups found no
    # key, both made one, and the second failed on the one-active-key rule or,
    # a moment later, retired the first's key at once. The race is timing:
    # run it a few times.
    for attempt in range(10):
        settings.KEY_DIR = tmp_path / f"keys-{attempt}"
        Key.objects.all().delete()

        results = at_once(keyring.active_key, keyring.active_key)

        assert not [r for r in results if isinstance(r, Exception)], results
        assert results[0] == results[1], attempt
        key_id = results[0][0]
        assert list(Key.objects.values_list("key_id", flat=True)) == [key_id]
        assert [p.name for p in (settings.KEY_DIR).iterdir()] == [f"{key_id}.key"]


def starts_of(backup):
    return AuditEvent.objects.filter(action="backup.start", object_id=str(backup.pk)).count()


def test_it_starts_one_backup_when_a_plan_is_triggered_twice_at_once(plan, tmp_path):
    results = at_once(
        lambda: backup_runs.start_backup("api", plan), lambda: backup_runs.start_backup("scheduler", plan)
    )

    refused = [r for r in results if isinstance(r, services.Refused)]
    started = [r for r in results if isinstance(r, Backup)]
    assert len(started) == 1 and len(refused) == 1, results
    assert "already queued or running" in str(refused[0])
    backup = Backup.objects.get()  # the only row
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert starts_of(backup) == 1
    assert AuditEvent.objects.filter(action="backup.queue").count() == 1
    assert len(files_under(tmp_path / "b")) == 3  # one object, its manifest and its globals


def test_it_starts_one_backup_when_back_up_now_is_posted_twice_at_once(plan, admin_user):
    def post():
        client = Client()
        client.force_login(admin_user)
        return client.post(f"/plans/{plan.pk}/run/", {"label": "pre-migration"}, follow=True)

    responses = at_once(post, post)

    assert [r.status_code for r in responses] == [200, 200]
    pages = [r.content.decode() for r in responses]
    assert sum("already queued or running" in page for page in pages) == 1
    backup = Backup.objects.get()
    assert (backup.label, backup.status) == ("pre-migration", Backup.SUCCEEDED)
    assert starts_of(backup) == 1


def test_it_runs_a_task_delivered_twice_at_once_only_once(plan, tmp_path):
    backup = backup_runs.create_backup("test", plan)

    results = at_once(lambda: tasks.run_backup(backup.pk), lambda: tasks.run_backup(backup.pk))

    assert sorted(results) == ["skipped", "succeeded"]
    assert starts_of(backup) == 1
    assert backup.copies.count() == 1
    assert backup.copies.get().status == Copy.DURABLE
    assert len(files_under(tmp_path / "b")) == 3


# --- two worker processes on one Redis queue ------------------------------------

PLANS, ROUNDS = 3, 2


def database_url():
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return f"postgresql://{settings['USER']}{password}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


@pytest.fixture
def redis_queue(redis_url, monkeypatch):
    """This process enqueues into the test's Redis database as a web process
    with REDIS_URL set would (the test settings run tasks inline)."""
    redis_harness.enqueue_through(monkeypatch, redis_url)
    return redis_url


@pytest.fixture
def two_workers(redis_queue):
    clusters = [redis_harness.qcluster(redis_queue, database_url()) for _ in range(2)]
    try:
        # Both listening before any work is queued, so both can take some.
        wait_for(
            lambda: all("ready for work" in redis_harness.output(c) or c.poll() is not None for c in clusters),
            timeout=45,
        )
        for cluster in clusters:
            assert cluster.poll() is None, redis_harness.output(cluster)[-2000:]
        yield clusters
    finally:
        for cluster in clusters:
            redis_harness.stop_cluster(cluster)


def finished(backups):
    return not Backup.objects.filter(pk__in=[b.pk for b in backups], status__in=Backup.ACTIVE_STATUSES).exists()


@pytest.mark.slow
def test_two_workers_on_one_redis_queue_run_each_backup_exactly_once(source_database, tmp_path, two_workers):
    from django_q.models import Task

    source = pg_source(source_database)
    destination = local_destination(tmp_path / "b")
    plans = [
        make_plan(source, [destination], name=f"Plan {n}", retention_mode="last", keep_last=10) for n in range(PLANS)
    ]

    backups = []
    for _ in range(ROUNDS):
        batch = [backup_runs.start_backup("test", plan) for plan in plans]
        for backup in batch:  # the queue delivers every task a second time
            queues.enqueue_work("catalog.tasks.run_backup", backup.pk, task_name=f"again-{backup.pk}")
        try:
            wait_for(lambda batch=batch: finished(batch), timeout=60)
        except AssertionError:
            raise AssertionError("\n".join(redis_harness.output(c)[-3000:] for c in two_workers)) from None
        backups += batch

    deliveries = PLANS * ROUNDS * 2
    wait_for(lambda: Task.objects.filter(func="catalog.tasks.run_backup").count() == deliveries, timeout=20)
    results = sorted(Task.objects.filter(func="catalog.tasks.run_backup").values_list("result", flat=True))
    assert results == ["skipped"] * (deliveries // 2) + ["succeeded"] * (deliveries // 2)
    assert Backup.objects.count() == len(backups)
    for backup in Backup.objects.all():
        assert backup.status == Backup.SUCCEEDED, backup.error
        assert starts_of(backup) == 1
        assert list(backup.copies.values_list("status", flat=True)) == [Copy.DURABLE]
        assert AuditEvent.objects.filter(action="backup.succeeded", object_id=str(backup.pk)).count() == 1
    stored = files_under(tmp_path / "b")
    assert len(stored) == 3 * len(backups)  # an object, its manifest and its globals each
    assert {name.rsplit("-", 1)[1].split(".")[0] for name in stored} == {str(b.pk) for b in backups}

    # Which cluster's worker ran each backup (its pid is in Backup.worker).
    clusters = {cluster.pid for cluster in two_workers}
    ran_by = set()
    for worker in Backup.objects.values_list("worker", flat=True):
        pid = int(worker.rsplit(":", 1)[1])
        ran_by |= clusters & set(redis_harness.ancestors(pid))
    assert ran_by == clusters, "one worker took all the work"
