"""Point-in-time restores end to end, with the real pieces: a source cluster
with 1 MB WAL segments streamed by the receiver supervisor (pg_receivewal on
a slot) through the pipeline to a destination, base backups taken by the
catalog's backup service, and restores that unpack the base backup, replay
the stored WAL through restore_command and promote a new cluster."""

import os
import tempfile
import time
from datetime import UTC, datetime

import psycopg
import pytest
from django.conf import settings as django_settings

from catalog import backup_runs, queues
from catalog.engine import pitr as engine
from catalog.models import AuditEvent
from catalog.services import Refused
from pitr import restores, wal
from pitr.models import BaseBackupWal, ContinuousProtection, PitrRestore, WalSegment
from tests.factories import local_destination, make_plan
from tests.harness.pg import free_port, pg_bin
from tests.pitr.wal_helpers import (
    cluster_source,
    execute,
    running_supervisor,
    stored_wal_containing,
    wait_for,
    wal_cluster,
    write_wal,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def restore_root(settings):
    """PITR_RESTORE_ROOT for the test; every restored server started under it
    is stopped and removed afterwards."""
    root = tempfile.mkdtemp(prefix="strongroom-pitr-")
    os.chmod(root, 0o755)  # the restored server's OS user must reach its directory
    settings.PITR_RESTORE_ROOT = root
    # A restore goes to this host's own queue, which only takes one while its
    # workers beat; here the test process runs the task inline, as they would.
    queues.record_heartbeat(settings.HOST_CLUSTER)
    settings.PG_BASEBACKUP = pg_bin("pg_basebackup")
    yield root
    for name in os.listdir(root):
        engine.stop(
            django_settings.PG_CTL,
            os.path.join(root, name),
            django_settings.PITR_OS_USER,
            remove=True,
            mode="immediate",
        )
    engine.shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def protected(restore_root, admin_user, tmp_path):
    """(cluster, source) under streaming continuous protection to a local
    destination, with the supervisor running, and an items table."""
    cluster = wal_cluster()
    source = cluster_source(cluster)
    destination = local_destination(tmp_path / "vault")
    wal.enable_protection(admin_user, source, ContinuousProtection.STREAM, [destination])
    execute(cluster, "CREATE TABLE items (id serial PRIMARY KEY, batch int NOT NULL, note text)")
    with running_supervisor() as supervisor:
        cluster.destination = destination
        yield cluster, source
        supervisor.stop_event.set()
    cluster.stop()


def take_base_backup(source, destination):
    plan = make_plan(source, [destination], name="Physical", format="basebackup", compression="zstd", encrypt=True)
    backup = backup_runs.start_backup("test", plan)
    wait_for(lambda: BaseBackupWal.objects.filter(backup=backup, wal_complete_at__isnull=False).exists(), 60)
    return backup


def insert_batch(cluster, batch, rows=10):
    execute(cluster, f"INSERT INTO items (batch, note) SELECT {batch}, 'batch {batch}' FROM generate_series(1, {rows})")


def switch_and_ship(cluster, source):
    """Ends the current segment and waits until the receiver stored it."""
    name = execute(cluster, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    wait_for(lambda: WalSegment.objects.filter(source=source, name=name, status=WalSegment.STORED).exists(), 60)
    return name


def restored_batches(job):
    with psycopg.connect(host="localhost", port=job.port, user="postgres", dbname="postgres") as conn:
        return [row[0] for row in conn.execute("SELECT DISTINCT batch FROM items ORDER BY 1")]


def restore(admin_user, source, root, name, **target):
    return restores.request_pitr_restore(
        admin_user, source, data_directory=os.path.join(root, name), port=free_port(), **target
    )


def test_it_restores_exactly_the_batches_committed_before_the_moment(protected, admin_user, restore_root):
    cluster, source = protected
    insert_batch(cluster, 1)
    time.sleep(1.1)
    base = take_base_backup(source, cluster.destination)
    insert_batch(cluster, 2)
    time.sleep(1.1)
    before_batch_3 = datetime.now(UTC)
    insert_batch(cluster, 3)
    time.sleep(1.1)
    moment = datetime.now(UTC)
    time.sleep(1.1)
    for batch in (4, 5):
        insert_batch(cluster, batch)
        time.sleep(1.1)
    switch_and_ship(cluster, source)

    job = restore(
        admin_user, source, restore_root, "orders-at-moment", target_kind=PitrRestore.TIME, target_time=moment
    )
    job.refresh_from_db()

    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    assert job.base_backup == base
    assert restored_batches(job) == [1, 2, 3]
    assert before_batch_3 <= job.recovered_to <= moment  # batch 3's commit, the last before the moment
    assert "Recovered to" in job.summary and str(job.port) in job.summary
    assert job.wal_from == base.base_wal.start_segment and job.wal_to >= job.wal_from
    actions = list(AuditEvent.objects.filter(object_type="pitrrestore").values_list("action", flat=True))
    assert {"pitr.restore.queue", "pitr.restore.start", "pitr.restore.succeeded"} <= set(actions)


def test_it_restores_to_the_latest_stored_row_after_a_hard_kill(protected, admin_user, restore_root):
    # How soon a committed row is stored (the RPO, in seconds) is measured by bench.rpo.
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    execute(cluster, "INSERT INTO items (batch, note) VALUES (99, 'rpo-marker-row')")
    wait_for(lambda: stored_wal_containing(source, b"rpo-marker-row"), timeout=120, interval=0.2)
    cluster.kill()  # immediate shutdown, as if the machine lost power

    job = restore(admin_user, source, restore_root, "orders-latest", target_kind=PitrRestore.LATEST)
    job.refresh_from_db()

    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    assert restored_batches(job) == [1, 99]


def test_it_refuses_a_target_past_a_missing_segment_and_restores_before_it(protected, admin_user, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    time.sleep(1.1)
    before_gap = datetime.now(UTC)
    time.sleep(1.1)
    insert_batch(cluster, 2)
    switch_and_ship(cluster, source)
    write_wal(cluster, megabytes=3)
    lost = switch_and_ship(cluster, source)
    write_wal(cluster, megabytes=2)
    insert_batch(cluster, 3)
    switch_and_ship(cluster, source)
    after_gap = datetime.now(UTC)
    time.sleep(1.1)
    insert_batch(cluster, 4)
    switch_and_ship(cluster, source)

    segment = WalSegment.objects.get(source=source, name=lost)
    wal.delete_objects(segment)
    segment.delete()
    assert lost in wal.continuity(source)["missing"]

    with pytest.raises(Refused) as refusal:
        restore(admin_user, source, restore_root, "past-gap", target_kind=PitrRestore.TIME, target_time=after_gap)
    assert f"WAL segment {lost} is missing from storage" in str(refusal.value)
    assert not os.path.exists(os.path.join(restore_root, "past-gap"))
    with pytest.raises(Refused, match=lost):
        restore(admin_user, source, restore_root, "latest", target_kind=PitrRestore.LATEST)

    job = restore(admin_user, source, restore_root, "before-gap", target_kind=PitrRestore.TIME, target_time=before_gap)
    job.refresh_from_db()
    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    assert restored_batches(job) == [1]


def test_the_drill_compares_row_counts_at_a_restore_point_and_cleans_up(protected, admin_user, restore_root):
    cluster, source = protected
    insert_batch(cluster, 1, rows=25)
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 2, rows=17)

    job = restores.request_pitr_drill(admin_user, source)
    job.refresh_from_db()

    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    assert job.report["counts_match"] is True
    assert job.report["expected_counts"]["public.items"] == 42
    assert job.report["restored_counts"] == job.report["expected_counts"]
    assert job.restore_point.startswith(restores.DRILL_POINT_PREFIX)
    assert "Drill passed" in job.summary
    assert not os.path.exists(job.data_directory)  # stopped and removed
    assert os.listdir(restore_root) == []


def test_it_refuses_unsafe_directories_and_busy_ports(protected, admin_user, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    occupied = os.path.join(restore_root, "occupied")
    os.makedirs(occupied)
    open(os.path.join(occupied, "PG_VERSION"), "w").close()
    with pytest.raises(Refused, match="not empty"):
        restore(admin_user, source, restore_root, "occupied", target_kind=PitrRestore.LATEST)
    with pytest.raises(Refused, match="Restores go under"):
        restores.request_pitr_restore(
            admin_user, source, target_kind=PitrRestore.LATEST, data_directory="/etc/x", port=free_port()
        )
    with pytest.raises(Refused, match="already in use"):
        restores.request_pitr_restore(
            admin_user,
            source,
            target_kind=PitrRestore.LATEST,
            data_directory=os.path.join(restore_root, "new"),
            port=cluster.port,
        )
    assert not PitrRestore.objects.exists()


def test_wal_fetch_serves_stored_files_partials_and_says_when_there_is_none(protected, tmp_path):
    from django.core.management import call_command

    cluster, source = protected
    insert_batch(cluster, 1)
    complete = switch_and_ship(cluster, source)
    call_command("wal_fetch", source.pk, complete, str(tmp_path / "segment"))
    assert (tmp_path / "segment").read_bytes() == wal.read_wal_bytes(
        WalSegment.objects.get(source=source, name=complete)
    )
    assert not [p for p in os.listdir(tmp_path) if "strongroom-partial" in p]

    execute(cluster, "INSERT INTO items (batch, note) VALUES (7, 'only-in-the-partial')")
    partial = wait_for(lambda: stored_wal_containing(source, b"only-in-the-partial"), 60, 0.2)
    assert partial.kind == WalSegment.PARTIAL
    call_command("wal_fetch", source.pk, partial.name[:24], str(tmp_path / "newest"))
    assert b"only-in-the-partial" in (tmp_path / "newest").read_bytes()

    with pytest.raises(SystemExit) as end_of_wal:
        call_command("wal_fetch", source.pk, "00000002.history", str(tmp_path / "history"))
    assert end_of_wal.value.code == 1 and not (tmp_path / "history").exists()


def test_the_tick_fails_a_restore_whose_worker_died_and_removes_its_directory(db, restore_root, admin_user, tmp_path):
    from datetime import timedelta

    from catalog import tasks
    from tests.factories import pg_source

    source = pg_source({"host": "127.0.0.1", "port": 1, "user": "nobody", "dbname": "gone"}, name="Gone")
    half_done = os.path.join(restore_root, "half-done")
    os.makedirs(half_done)
    open(os.path.join(half_done, "PG_VERSION"), "w").close()
    stale = datetime.now(UTC) - timedelta(hours=1)
    job = PitrRestore.objects.create(
        source=source,
        status=PitrRestore.RUNNING,
        started_at=stale,
        heartbeat_at=stale,
        data_directory=half_done,
        port=free_port(),
    )

    assert tasks.tick()["swept_pitr_restores"] == [job.pk]
    job.refresh_from_db()
    assert job.status == PitrRestore.FAILED and "stopped responding" in job.summary
    assert not os.path.exists(half_done)


def test_it_restores_from_wal_and_a_base_backup_kept_only_in_s3(restore_root, admin_user, s3_bucket):
    from tests.factories import s3_destination

    cluster = wal_cluster()
    try:
        source = cluster_source(cluster)
        offsite = s3_destination(s3_bucket)
        wal.enable_protection(admin_user, source, ContinuousProtection.STREAM, [offsite])
        execute(cluster, "CREATE TABLE items (id serial PRIMARY KEY, batch int NOT NULL, note text)")
        with running_supervisor():
            take_base_backup(source, offsite)
            insert_batch(cluster, 1)
            switch_and_ship(cluster, source)
            job = restore(admin_user, source, restore_root, "from-s3", target_kind=PitrRestore.LATEST)
        job.refresh_from_db()
        assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
        assert "Off-site S3" in job.log
        assert restored_batches(job) == [1]
    finally:
        cluster.stop()


def test_a_damaged_base_backup_fails_the_restore_and_leaves_nothing_behind(protected, admin_user, restore_root):
    cluster, source = protected
    base = take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    switch_and_ship(cluster, source)
    stored = os.path.join(cluster.destination.path, base.copies.get().key)
    with open(stored, "r+b") as handle:
        handle.seek(os.path.getsize(stored) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))

    job = restore(admin_user, source, restore_root, "damaged", target_kind=PitrRestore.LATEST)
    job.refresh_from_db()

    assert job.status == PitrRestore.FAILED, job.summary
    assert "could not be read from Local disk" in job.summary and "The restored directory was removed" in job.summary
    assert not os.path.exists(os.path.join(restore_root, "damaged"))
    assert not [name for name in os.listdir(restore_root)]


def test_a_restored_server_run_by_another_os_user_does_not_inherit_our_secrets(
    protected, admin_user, restore_root, monkeypatch
):
    from catalog.engine.pitr import current_user

    if current_user() == django_settings.PITR_OS_USER:
        pytest.skip("the restored server runs as the worker's own user here")
    monkeypatch.setenv("STRONGROOM_TEST_SECRET", "do-not-leak-me")
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    job = restore(admin_user, source, restore_root, "no-secrets", target_kind=PitrRestore.LATEST)
    job.refresh_from_db()
    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    with open(os.path.join(job.data_directory, "postmaster.pid")) as handle:
        pid = handle.readline().strip()
    with open(f"/proc/{pid}/environ", "rb") as handle:
        environment = handle.read()
    assert b"do-not-leak-me" not in environment and b"DATABASE_URL" not in environment
