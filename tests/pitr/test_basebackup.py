"""Physical base backups: pg_basebackup's tar through the same pipeline as
every backup (compressed, encrypted, checksummed, to local disk and S3),
proven to be a real base backup by recovering it with plain PostgreSQL tools,
and never counted as good until the WAL it needs is stored."""

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

import psycopg
import pytest
from django.urls import reverse

from catalog import backup_runs, services
from catalog.engine.basebackup import parse_backup_label
from catalog.models import AuditEvent, Backup, Copy, Source, Verification
from catalog.verification import create_verification
from pitr.models import BaseBackupWal, ContinuousProtection
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.pg import Cluster, as_user, free_port, pg_bin
from tests.support import decrypt, files_under, in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEGMENT_SIZE = 1 << 20


@pytest.fixture
def cluster(settings):
    settings.PG_BASEBACKUP = pg_bin("pg_basebackup")
    cluster = Cluster(initdb_args=("--wal-segsize=1",))
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 1000) g")
    yield cluster
    cluster.stop()


def protected_source(cluster, destinations, mode=ContinuousProtection.ARCHIVE):
    """A source whose continuous protection is on (its WAL shipping itself is
    the wal part's business; here only the prerequisite matters)."""
    source = pg_source({**cluster.server, "dbname": "postgres"}, name="Orders cluster")
    protection = ContinuousProtection.objects.create(
        source=source, enabled=True, mode=mode, check_report={"segment_size": SEGMENT_SIZE}
    )
    protection.destinations.set(destinations)
    return source


def base_backup_plan(source, destinations, **fields):
    return make_plan(
        source, destinations, name="Nightly physical", format="basebackup", compression="zstd", encrypt=True, **fields
    )


def decrypted_tar(backup, directory, tmp_path):
    stored = directory / backup.copies.get(destination__kind="local").key
    plain = tmp_path / "base.tar"
    result = decrypt(stored, plain)
    assert result.returncode == 0, result.stderr
    return plain


def test_it_takes_a_base_backup_to_local_and_s3_and_it_recovers(cluster, s3_bucket, tmp_path):
    local, remote = local_destination(tmp_path / "backups"), s3_destination(s3_bucket)
    source = protected_source(cluster, [local])
    plan = base_backup_plan(source, [local, remote])

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts == {}
    assert "pg_basebackup" in backup.tool_version and backup.server_version
    copies = {copy.destination.kind: copy for copy in backup.copies.all()}
    assert {copy.status for copy in copies.values()} == {Copy.DURABLE}
    local_object = tmp_path / "backups" / copies["local"].key
    assert local_object.name.endswith(".tar.zst.enc")
    remote_body = (
        s3.client(s3_bucket["endpoint_url"])
        .get_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{copies['s3'].key}")["Body"]
        .read()
    )
    assert remote_body == local_object.read_bytes()
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []

    # The stored object decrypts to a tar of a data directory.
    plain = decrypted_tar(backup, tmp_path / "backups", tmp_path)
    listing = subprocess.run(["tar", "-tf", str(plain)], capture_output=True, text=True, check=True).stdout.split()
    assert {"PG_VERSION", "global/pg_control", "backup_label"} <= set(listing)
    assert not [name for name in listing if name.startswith("pg_wal/0")]  # the WAL comes from protection

    # The recorded WAL bounds are the backup_label's, and the manifest says them too.
    with tarfile.open(plain) as archive:
        label = parse_backup_label(archive.extractfile("backup_label").read().decode())
    bounds = BaseBackupWal.objects.get(backup=backup)
    assert (bounds.start_segment, bounds.start_lsn, bounds.timeline) == (
        label["start_segment"],
        label["start_lsn"],
        label["timeline"],
    )
    assert bounds.end_segment >= bounds.start_segment and bounds.end_lsn
    assert bounds.started_at and bounds.finished_at and bounds.wal_complete_at is None
    manifest = json.loads((tmp_path / "backups" / copies["local"].manifest_key).read_text())
    assert manifest["format"] == "basebackup"
    assert manifest["wal"] == {
        "timeline": 1,
        "start_lsn": bounds.start_lsn,
        "end_lsn": bounds.end_lsn,
        "start_segment": bounds.start_segment,
        "end_segment": bounds.end_segment,
        "segment_size": SEGMENT_SIZE,
    }

    # Rows written after the backup are not in it.
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        conn.execute("INSERT INTO orders (item) VALUES ('after the backup')")
    assert recovered_rows(cluster, plain, bounds) == (1000, 0)


def recovered_rows(cluster, plain_tar, bounds):
    """Extracts the base backup as the cluster's OS user, adds the WAL it needs
    from the running cluster's pg_wal (its end segment is complete, as the
    backup switched WAL), starts it on another port and counts the rows."""
    root = tempfile.mkdtemp(prefix="strongroom-recovered-")
    datadir = os.path.join(root, "data")
    shutil.chown(root, cluster.os_user)
    try:
        run_as(cluster, ["mkdir", "-m", "700", datadir])
        with open(plain_tar, "rb") as stream:
            subprocess.run(as_user(["tar", "-xf", "-", "-C", datadir], cluster.os_user), stdin=stream, check=True)
        wait_for(lambda: os.path.exists(os.path.join(cluster.datadir, "pg_wal", bounds.end_segment)))
        first, last = int(bounds.start_segment[16:], 16), int(bounds.end_segment[16:], 16)
        for number in range(first, last + 1):
            name = bounds.start_segment[:16] + f"{number:08X}"
            target = os.path.join(datadir, "pg_wal", name)
            shutil.copyfile(os.path.join(cluster.datadir, "pg_wal", name), target)
            shutil.chown(target, cluster.os_user)
        port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        run_as(
            cluster, [pg_bin("pg_ctl"), "-D", datadir, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"]
        )
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as conn:
                return conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE item = 'after the backup') FROM orders"
                ).fetchone()
        finally:
            run_as(cluster, [pg_bin("pg_ctl"), "-D", datadir, "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_as(cluster, argv):
    result = subprocess.run(as_user(argv, cluster.os_user), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_a_base_backup_waits_for_its_wal_before_it_counts_as_good(cluster, tmp_path, admin_client):
    local = local_destination(tmp_path / "backups")
    source = protected_source(cluster, [local])
    backup = backup_runs.start_backup("test", base_backup_plan(source, [local]))
    backup.refresh_from_db()
    bounds = BaseBackupWal.objects.get(backup=backup)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.waiting_for_wal() and not backup.is_good()
    source.refresh_from_db()
    assert source.last_good_at is None
    assert source.last_good_backup() is None
    assert not Backup.objects.filter(source=source).good().exists()
    assert plan_three_two_one_backup(backup) is None
    page = admin_client.get(backup.get_absolute_url()).content.decode()
    assert f"Waiting for WAL {bounds.start_segment}" in page
    assert "0 tables" not in page and "Test restore" not in page
    assert "waiting for WAL" in admin_client.get(reverse("backup_list")).content.decode()

    ship_needed_wal(cluster, source, bounds)

    bounds.refresh_from_db()
    backup.refresh_from_db()
    source.refresh_from_db()
    assert bounds.wal_complete_at is not None
    assert backup.is_good()
    assert source.last_good_at == backup.created_at
    assert source.last_good_backup() == backup
    assert AuditEvent.objects.filter(action="backup.wal_complete", object_id=str(backup.pk)).exists()
    page = admin_client.get(backup.get_absolute_url()).content.decode()
    assert "Waiting for WAL" not in page and "all stored since" in page


def ship_needed_wal(cluster, source, bounds):
    """Ships the segments a base backup needs from the cluster's pg_wal, as
    continuous protection does once the server completes them."""
    from pitr import wal

    wait_for(lambda: os.path.exists(os.path.join(cluster.datadir, "pg_wal", bounds.end_segment)))
    first, last = int(bounds.start_segment[16:], 16), int(bounds.end_segment[16:], 16)
    for number in range(first, last + 1):
        name = bounds.start_segment[:16] + f"{number:08X}"
        wal.ship_wal_path(source.protection, os.path.join(cluster.datadir, "pg_wal", name))


def test_retention_keeps_the_newest_complete_base_backup_not_one_waiting_for_wal(cluster, tmp_path):
    from catalog import lifecycle

    local = local_destination(tmp_path / "backups")
    source = protected_source(cluster, [local])
    plan = base_backup_plan(source, [local], retention_mode="last", keep_last=1)
    complete = backup_runs.start_backup("test", plan, trigger="schedule")  # the plan's rule judges these
    ship_needed_wal(cluster, source, BaseBackupWal.objects.get(backup=complete))
    older = backup_runs.start_backup("test", plan, trigger="schedule")
    ship_needed_wal(cluster, source, BaseBackupWal.objects.get(backup=older))
    waiting = backup_runs.start_backup("test", plan, trigger="schedule")
    assert Backup.objects.get(pk=waiting.pk).waiting_for_wal()

    # The plan's rule ran after each backup: the newest good one is the
    # older complete one, and the one waiting for its WAL does not count.
    rows = {row.backup.pk: row.decision.explain() for row in lifecycle.preview(plan)}
    assert rows == {waiting.pk: "waiting for its WAL, no newer good backup", older.pk: "last #1"}
    complete.refresh_from_db()
    assert complete.is_pruned() and complete.prune_reason


def plan_three_two_one_backup(backup):
    return backup.plan.three_two_one()["backup"]


def test_a_base_backup_plan_needs_continuous_protection(cluster, tmp_path, admin_client):
    local = local_destination(tmp_path / "backups")
    source = pg_source({**cluster.server, "dbname": "postgres"}, name="Unprotected")
    plan = base_backup_plan(source, [local])

    with pytest.raises(services.Refused, match="has no continuous protection"):
        backup_runs.start_backup("test", plan)
    response = admin_client.post(reverse("plan_run", args=[plan.pk]), {"label": ""}, follow=True)
    assert "has no continuous protection: a physical base backup needs the WAL after it" in response.content.decode()
    assert not Backup.objects.exists()
    assert backup_runs.run_scheduled_plan(plan.pk) is None
    assert AuditEvent.objects.filter(action="backup.skip", object_id=str(plan.pk)).exists()

    ContinuousProtection.objects.create(source=source, enabled=True, receiver_error="pg_receivewal exited")
    with pytest.raises(services.Refused, match="is not healthy"):
        backup_runs.start_backup("test", plan)
    assert files_under(tmp_path / "backups") == []


def test_it_refuses_a_cluster_with_extra_tablespaces(cluster, tmp_path):
    space = os.path.join(cluster.root, "space")
    run_as(cluster, ["mkdir", "-m", "700", space])
    with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE archive_space LOCATION '{space}'")
    local = local_destination(tmp_path / "backups")
    backup = backup_runs.start_backup("test", base_backup_plan(protected_source(cluster, [local]), [local]))
    backup.refresh_from_db()

    assert backup.status == Backup.FAILED
    assert "tablespaces outside its data directory (archive_space)" in backup.error
    assert files_under(tmp_path / "backups") == []


def test_it_cancels_a_running_base_backup_and_leaves_nothing(cluster, tmp_path, settings):
    # pg_basebackup slowed to 32 kB/s, so that the backup is caught mid-stream.
    slow = tmp_path / "bin" / "pg_basebackup"
    slow.parent.mkdir()
    slow.write_text(f'#!/bin/sh\nexec {pg_bin("pg_basebackup")} "$@" --max-rate=32\n')
    slow.chmod(0o755)
    settings.PG_BASEBACKUP = str(slow)
    local = local_destination(tmp_path / "backups")
    backup = backup_runs.create_backup("test", base_backup_plan(protected_source(cluster, [local]), [local]))

    worker = in_thread(backup_runs.run_backup, backup.pk)
    wait_for(lambda: base_backups_on_server(cluster) == 1)  # streaming its tar
    backup_runs.cancel_backup("test", Backup.objects.get(pk=backup.pk))
    worker.join(timeout=30)
    assert not worker.is_alive()

    backup.refresh_from_db()
    assert backup.status == Backup.CANCELLED
    assert files_under(tmp_path / "backups") == []
    assert not BaseBackupWal.objects.filter(backup=backup).exists()
    # pg_basebackup was stopped: no base backup is left running on the source.
    wait_for(lambda: base_backups_on_server(cluster) == 0, timeout=10)


def base_backups_on_server(cluster):
    with psycopg.connect(**cluster.server, dbname="postgres") as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_progress_basebackup").fetchone()[0]


def test_the_plan_form_offers_base_backups_for_postgresql_only(cluster, tmp_path, admin_client):
    local = local_destination(tmp_path / "backups")
    database = tmp_path / "app.sqlite3"
    database.write_bytes(b"")
    sqlite_source = services.save_source(
        "test", Source(name="App", engine="sqlite", sqlite_path=str(database), port=None)
    )
    pg = pg_source({**cluster.server, "dbname": "postgres"}, name="Orders cluster")

    sqlite_form = admin_client.get(reverse("plan_new") + f"?source={sqlite_source.pk}").content.decode()
    # Hidden until a PostgreSQL source is chosen in the form (strongroom.js shows it then).
    assert re.search(r'<option value="basebackup"[^>]* hidden disabled>', sqlite_form)
    pg_form = admin_client.get(reverse("plan_new") + f"?source={pg.pk}").content.decode()
    assert 'value="basebackup"' in pg_form
    assert "runs only while the source&#x27;s continuous protection is on" in pg_form

    response = admin_client.post(
        reverse("plan_new"),
        {
            "name": "Physical of SQLite",
            "source": sqlite_source.pk,
            "schedule": "0 2 * * *",
            "format": "basebackup",
            "compression": "zstd",
            "encrypt": "on",
            "destinations": [local.pk],
            "retention_mode": "gfs",
            "keep_daily": 7,
            "keep_weekly": 4,
            "keep_monthly": 12,
            "keep_yearly": 1,
            "keep_minimum": 1,
        },
    )
    assert response.status_code == 200
    assert "A SQLite source cannot produce “Physical base backup" in response.content.decode()
    assert not sqlite_source.plans.exists()


def test_a_base_backup_is_checksummed_but_test_restored_by_the_pitr_drill(cluster, tmp_path):
    local = local_destination(tmp_path / "backups")
    backup = backup_runs.start_backup("test", base_backup_plan(protected_source(cluster, [local]), [local]))
    backup.refresh_from_db()

    with pytest.raises(services.Refused, match="test-restored by the “Verify PITR” drill"):
        create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    check = create_verification("test", backup, Verification.CHECKSUM)
    check.refresh_from_db()
    assert check.status == Verification.PASSED, check.summary


def test_the_catalog_rebuild_brings_back_a_base_backup_with_its_wal_bounds(cluster, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    local = local_destination(tmp_path / "backups")
    backup = backup_runs.start_backup("test", base_backup_plan(protected_source(cluster, [local]), [local]))
    bounds = BaseBackupWal.objects.get(backup=backup)
    recorded = (bounds.timeline, bounds.start_lsn, bounds.end_lsn, bounds.start_segment, bounds.end_segment)

    call_command("flush", interactive=False, verbosity=0)  # the metadata database is lost
    local_destination(tmp_path / "backups")
    call_command("rebuild_catalog", stdout=StringIO(), stderr=StringIO())

    imported = Backup.objects.get()
    assert imported.format == "basebackup" and imported.status == Backup.SUCCEEDED
    bounds = imported.base_wal
    assert (bounds.timeline, bounds.start_lsn, bounds.end_lsn, bounds.start_segment, bounds.end_segment) == recorded
    assert imported.waiting_for_wal()  # its WAL is not in the rebuilt catalog


def test_the_tar_watcher_finds_the_label_and_the_manifest_tail_whatever_the_chunking(tmp_path):
    import io

    from catalog.engine.basebackup import TarWatcher

    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"
    manifest = (
        b'{"Files": ['
        + b'{"Path": "base/1/1234", "Size": 8192},' * 5000
        + b'], "WAL-Ranges": [{"End-LSN": "0/2000100"}]}'
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, body in [
            ("backup_label", label),
            ("PG_VERSION", b"15\n"),
            ("base/1/1234", os.urandom(9000)),
            ("backup_manifest", manifest),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    stream = buffer.getvalue()
    for size in (1, 511, 512, 4096, len(stream)):
        watcher = TarWatcher(limit=4096)
        for start in range(0, len(stream), size):
            watcher.feed(stream[start : start + size])
        assert watcher.members["backup_label"] == label
        assert watcher.members["backup_manifest"] == manifest[-4096:]
        assert watcher.names == ["backup_label", "PG_VERSION", "backup_manifest"]
