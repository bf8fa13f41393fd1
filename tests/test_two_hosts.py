"""Two Strongroom hosts working as one, end to end, on one machine.

Each "host" is the processes a host runs (tests/harness/worker.py): the work
cluster, its own queue's cluster and the WAL receiver supervisor, with its own
name (STRONGROOM_HOST), data directory and key directory. Both share what a
real deployment shares: the PostgreSQL metadata database (the test
database), a Redis broker, moto's S3, and the key-encryption key. This test
process is the web server: it queues work the way the pages do.

The story: backups land from both hosts; a key rotation started on host-a
is usable on host-b at once; a point-in-time restore goes to the host chosen
for it; host-a, which leads the WAL stream, is killed, host-b takes the
stream over with no segment missing, and restores on host-b bring back every
row, the last ones written after host-a died included."""

import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg
import pytest
from django.db import connection

from catalog import backup_runs, queues
from catalog.engine import pitr as pitr_engine
from catalog.engine import wal as walfiles
from catalog.models import Backup, Key, KeyRotation
from pitr import restores, wal
from pitr.models import BaseBackupWal, ContinuousProtection, PitrRestore, WalSegment
from restore import services as restore_services
from restore.models import RestoreJob
from tests.factories import make_plan, pg_source, s3_destination
from tests.harness import pg
from tests.harness import redis as redis_harness
from tests.harness.redis import redis_url  # noqa: F401 — a fixture
from tests.harness.sample_db import table_fingerprints, throwaway_tricky_database
from tests.harness.worker import ROOT, Worker, database_url, descendants
from tests.pitr.wal_helpers import cluster_source, execute, wal_cluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_for(condition, what, timeout=90, hosts=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s\n" + "\n".join(host.logs() for host in hosts))


class Host:
    """The processes of one host: `manage.py qcluster` for the work queue and
    for its own queue, and `manage.py wal_receiver`."""

    def __init__(self, name, tmp_path, env):
        self.name = name
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / name / "data"
        self.key_dir = tmp_path / name / "keys"
        # A restored server's directory must be reachable by its OS user (postgres).
        self.restore_root = tempfile.mkdtemp(prefix=f"strongroom-{name}-pitr-")
        os.chmod(self.restore_root, 0o755)
        self.env = {
            **env,
            "STRONGROOM_HOST": name,
            "STRONGROOM_DATA_DIR": str(self.data_dir),
            "STRONGROOM_KEY_DIR": str(self.key_dir),
            "PITR_RESTORE_ROOT": self.restore_root,
        }
        self.work = Worker(env["DATABASE_URL"], tmp_path / f"{name}-work.log", **self.env)
        self.own = Worker(
            env["DATABASE_URL"], tmp_path / f"{name}-own.log", **self.env, Q_CLUSTER_NAME="strongroom-host"
        )
        self.receiver = None

    def start_workers(self):
        self.work.start()
        self.own.start()

    def start_receiver(self):
        log = open(self.tmp_path / f"{self.name}-wal.log", "ab")  # noqa: SIM115 — the process's stdout
        self.receiver = subprocess.Popen(
            [sys.executable, "manage.py", "wal_receiver"],
            cwd=ROOT,
            env={**self.work.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def receiver_says(self, words, timeout=60):
        path = self.tmp_path / f"{self.name}-wal.log"
        wait_for(lambda: words in path.read_text(errors="replace"), f"{self.name}'s receiver saying {words!r}", timeout)

    def manage(self, *args):
        """manage.py run on this host, as an operator at its shell would."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.work.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def kill(self):
        """The host dies: every process of it at once (SIGKILL)."""
        self.work.kill()
        self.own.kill()
        if self.receiver is not None and self.receiver.poll() is None:
            pids = descendants(self.receiver.pid)
            os.killpg(self.receiver.pid, 9)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            self.receiver.wait(timeout=10)

    def logs(self):
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.tmp_path.glob(f"{self.name}-*.log"))
        )

    def clean_up(self):
        for name in os.listdir(self.restore_root):
            pitr_engine.stop(
                pg.pg_bin("pg_ctl"),
                os.path.join(self.restore_root, name),
                "postgres" if os.geteuid() == 0 else os.environ.get("USER", ""),
                remove=True,
                mode="immediate",
            )
        pitr_engine.shutil.rmtree(self.restore_root, ignore_errors=True)


@pytest.fixture
def shared(redis_url, monkeypatch, settings, tmp_path):  # noqa: F811 — the fixture above
    """What both hosts and this web process share: the metadata database,
    Redis, the key-encryption key; this process queues through Redis too."""
    kek = os.urandom(32)
    settings.KEY_ENCRYPTION_KEY = kek
    settings.KEY_DIR = tmp_path / "web-keys"
    settings.PG_BASEBACKUP = pg.pg_bin("pg_basebackup")
    redis_harness.enqueue_through(monkeypatch, redis_url)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("STRONGROOM_DATA_DIR", "STRONGROOM_KEY_DIR")},
        "DJANGO_SETTINGS_MODULE": "tests.harness.worker_settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": redis_url,
        "STRONGROOM_KEK": base64.b64encode(kek).decode(),
        # Tasks are signed with it: a host with a key of its own refuses the others' work.
        "SECRET_KEY": settings.SECRET_KEY,
        "PG_BASEBACKUP": pg.pg_bin("pg_basebackup"),
        "WORKER_HEARTBEAT_SECONDS": "1",
        "Q_WORKERS": "1",
    }
    yield env
    from catalog import keyring

    keyring.forget_opened_keys()


@pytest.fixture
def hosts(shared, tmp_path):
    started = [Host("host-a", tmp_path, shared), Host("host-b", tmp_path, shared)]
    yield started
    for host in started:
        host.kill()
        host.clean_up()


@pytest.fixture
def source_database(pg_server):
    with throwaway_tricky_database("sr_two_hosts", big_rows=5000) as conninfo:
        yield conninfo


def backed_up(backup, hosts, timeout=120):
    def done():
        backup.refresh_from_db()
        return backup.status not in (Backup.QUEUED, Backup.RUNNING)

    wait_for(done, f"backup #{backup.pk}", timeout, hosts)
    assert backup.status == Backup.SUCCEEDED, backup.summary + "\n" + "\n".join(h.logs() for h in hosts)
    return backup


def stored_segments(source):
    return sorted(
        name
        for name in WalSegment.objects.filter(source=source, status=WalSegment.STORED).values_list("name", flat=True)
        if walfiles.is_segment_name(name)
    )


def insert_batch(cluster, batch):
    execute(cluster, f"INSERT INTO items (batch) SELECT {batch} FROM generate_series(1, 50)")


def switch_and_wait_stored(cluster, source, hosts):
    name = execute(cluster, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    wait_for(
        lambda: WalSegment.objects.filter(source=source, name=name, status=WalSegment.STORED).exists(),
        f"WAL segment {name} stored\n" + "\n".join(h.logs() for h in hosts),
    )
    return name


def finished_pitr(job, hosts, timeout=180):
    def done():
        job.refresh_from_db()
        return job.status not in PitrRestore.ACTIVE_STATUSES

    wait_for(done, f"point-in-time restore #{job.pk}", timeout)
    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log + "\n".join(h.logs() for h in hosts)
    return job


def latest_on(host, source, user, directory):
    """A point-in-time restore to the latest moment, chosen for `host`."""
    return restores.request_pitr_restore(
        user,
        source,
        target_kind=PitrRestore.LATEST,
        data_directory=os.path.join(host.restore_root, directory),
        port=pg.free_port(),
        host=host.name,
    )


def restored_batches(job):
    with psycopg.connect(host="localhost", port=job.port, user="postgres", dbname="postgres") as conn:
        return [row[0] for row in conn.execute("SELECT DISTINCT batch FROM items ORDER BY 1")]


def test_two_hosts_back_up_share_keys_route_restores_and_keep_the_wal_stream(
    hosts, source_database, s3_bucket, admin_user
):
    host_a, host_b = hosts
    offsite = s3_destination(s3_bucket)
    logical = make_plan(pg_source(source_database, name="Shop"), [offsite], name="Shop nightly", encrypt=True)
    cluster = wal_cluster()
    try:
        run_the_story(host_a, host_b, logical, offsite, cluster, source_database, admin_user)
    finally:
        cluster.stop()


def run_the_story(host_a, host_b, logical, offsite, cluster, source_database, admin_user):
    hosts = (host_a, host_b)
    # --- both hosts come up; host-a's WAL receiver leads, host-b's stands by
    for host in hosts:
        host.start_workers()
    wait_for(
        lambda: queues.hosts_with_own_queue() == ["host-a", "host-b"] and queues.work_hosts() == ["host-a", "host-b"],
        "both hosts' heartbeats",
    )
    source = cluster_source(cluster, name="Orders")
    execute(cluster, "CREATE TABLE items (id serial PRIMARY KEY, batch int NOT NULL)")
    wal.enable_protection(admin_user, source, ContinuousProtection.STREAM, [offsite])
    host_a.start_receiver()
    host_a.receiver_says("Leading:")
    host_b.start_receiver()
    host_b.receiver_says("Standing by:")
    insert_batch(cluster, 1)
    first_segment = switch_and_wait_stored(cluster, source, hosts)

    # --- backups from both hosts: logical ones of the shop, a base backup of orders
    physical = make_plan(source, [offsite], name="Orders base", format="basebackup", compression="zstd", encrypt=True)
    base = backed_up(backup_runs.start_backup("test", physical), hosts)
    wait_for(
        lambda: BaseBackupWal.objects.filter(backup=base, wal_complete_at__isnull=False).exists(),
        "the base backup's WAL",
    )
    # Both hosts' pushers wait on the one Redis list, and Redis hands each
    # task to the client that has waited longest: the hosts take turns. A
    # pusher whose read from Redis failed sleeps 10 s before its sentinel
    # starts another (django-q2), so the other host may take a few in a row.
    took = {base.worker.split(":")[0]}
    deadline = time.monotonic() + 45
    while took != {"host-a", "host-b"} and time.monotonic() < deadline:
        took.add(backed_up(backup_runs.start_backup("test", logical), hosts).worker.split(":")[0])
        time.sleep(0.5)
    assert took == {"host-a", "host-b"}, took

    # --- a key rotation started on host-a, by its operator
    old_key = Key.objects.get(is_active=True)
    rotated = host_a.manage("shell", "-c", "from catalog import keys; keys.start_rotation('operator on host-a')")
    assert rotated.returncode == 0, rotated.stderr
    wait_for(
        lambda: KeyRotation.objects.filter(status=KeyRotation.SUCCEEDED).exists(),
        "the rotation\n" + "\n".join(h.logs() for h in hosts),
    )
    new_key = Key.objects.get(is_active=True)
    assert new_key.key_id != old_key.key_id and new_key.is_sealed()
    for host in hosts:  # held in the metadata database, never as a file on either host
        assert not any(host.key_dir.glob("*.key"))
    after_rotation = backed_up(backup_runs.start_backup("test", logical), hosts)
    assert after_rotation.key_id == new_key.key_id

    # --- a point-in-time restore, routed to the host chosen for it
    insert_batch(cluster, 2)
    switch_and_wait_stored(cluster, source, hosts)
    on_b = finished_pitr(latest_on(host_b, source, admin_user, "orders-latest"), hosts)
    assert on_b.worker.startswith("host-b:") and on_b.host == "host-b"
    assert restored_batches(on_b) == [1, 2]
    restores.stop_restored_server(admin_user, on_b)  # this process is not host-b: queued for it
    wait_for(lambda: PitrRestore.objects.get(pk=on_b.pk).report.get("stopped_at"), "host-b stopping its server")

    # --- host-a dies, with the WAL stream; host-b takes it over
    host_a.kill()
    host_b.receiver_says("Leading:", timeout=60)
    for batch in (3, 4):
        insert_batch(cluster, batch)
        last_segment = switch_and_wait_stored(cluster, source, [host_b])
    segments = stored_segments(source)
    assert segments[0] <= first_segment and segments[-1] == last_segment
    assert no_gap(segments), f"a gap in the stored WAL: {segments}"

    # --- host-b restores a backup sealed with the key host-a made, and the latest state of orders
    job = restore_services.request_restore(
        "test", after_rotation, target=RestoreJob.NEW, database=f"shop_on_b_{uuid.uuid4().hex[:6]}"
    )
    wait_for(
        lambda: RestoreJob.objects.get(pk=job.pk).status not in (RestoreJob.QUEUED, RestoreJob.RUNNING),
        "the restore on host-b",
        180,
    )
    job.refresh_from_db()
    try:
        assert job.status == RestoreJob.SUCCEEDED, job.summary + job.log + host_b.logs()
        assert job.worker.startswith("host-b:")
        assert table_fingerprints({**source_database, "dbname": job.target_database}) == table_fingerprints(
            source_database
        )
    finally:
        pg.drop_database(job.target_database)
    latest = finished_pitr(latest_on(host_b, source, admin_user, "orders-after-failover"), [host_b])
    assert restored_batches(latest) == [1, 2, 3, 4]
    assert latest.worker.startswith("host-b:")


def no_gap(segments):
    """Consecutive WAL segment names (1 MB segments: 4096 to a log file)."""
    numbers = [int(name[8:16], 16) * 4096 + int(name[16:24], 16) for name in segments]
    return all(b == a + 1 for a, b in zip(numbers, numbers[1:], strict=False))
