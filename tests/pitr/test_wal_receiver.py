"""The receiver supervisor against a real cluster: segments reach a local
directory and S3 and decrypt to the exact WAL bytes; the partial segment
makes the recovery point seconds old (bench.rpo measures how many); a killed
pg_receivewal is restarted without losing a segment; a missing segment is
named and alerted."""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from catalog.alerts.models import Alert
from pitr import monitoring, wal
from pitr.models import ContinuousProtection, WalCopy, WalSegment
from tests.factories import local_destination, s3_destination
from tests.pitr.wal_helpers import (
    cluster_source,
    execute,
    running_supervisor,
    stored,
    stored_wal_containing,
    wait_for,
    write_wal,
)
from tests.support import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def protect(cluster, destinations):
    source = cluster_source(cluster)
    wal.enable_protection("test", source, destinations=destinations)
    return source


def server_wal(cluster, name):
    return Path(cluster.datadir, "pg_wal", name).read_bytes()


def test_it_ships_segments_to_local_and_s3_as_the_exact_wal(
    cluster, tmp_path, s3_bucket, live_server, page, admin_user
):
    local, s3 = local_destination(tmp_path / "local"), s3_destination(s3_bucket)
    source = protect(cluster, [local, s3])
    with running_supervisor():
        switched_from = write_wal(cluster, megabytes=3)
        wait_for(lambda: wal.is_stored(source, switched_from))
        segments = stored(source)
        assert len(segments) >= 3
        for segment in segments:
            copies = {copy.destination_id: copy for copy in segment.copies.all()}
            assert set(copies) == {local.pk, s3.pk}
            assert all(copy.status == WalCopy.DURABLE for copy in copies.values())
            assert copies[local.pk].key == f"wal/{source.slug}/{segment.name}.zst.enc"
            assert segment.encrypted and segment.key_id and segment.size == 1 << 20
            expected = server_wal(cluster, segment.name)
            for copy in copies.values():  # each destination, read back on its own
                plain = b"".join(
                    wal.restore_stream(
                        copy.destination.storage().open_reader(copy.key),
                        keyring=wal.keyring.lookup,
                        expected_sha256=segment.sha256,
                    )
                )
                assert plain == expected
        assert (tmp_path / "local" / "wal" / source.slug / f"{segments[0].name}.zst.enc").is_file()
        # The spool keeps only the partial pg_receivewal resumes from.
        spool = Path(cluster_spool(source))
        assert all(name.endswith(".partial") for name in os.listdir(spool))
        # Idempotent: shipping a stored segment again stores nothing new.
        before = WalSegment.objects.get(pk=segments[0].pk)
        wal.ship_wal_file(ContinuousProtection.objects.get(source=source), segments[0].name, None)
        assert WalSegment.objects.get(pk=segments[0].pk).sha256 == before.sha256

        protection = ContinuousProtection.objects.get(source=source)
        assert protection.receiver_pid and protection.receiver_restarts == 0
        log_in(page, live_server, admin_user)
        page.goto(f"{live_server.url}/sources/{source.pk}/")
        panel = page.locator("#protection-panel")
        panel.wait_for()
        assert "Receiving" in panel.inner_text() and "Intact" in panel.inner_text()
        os.makedirs("/tmp/shots-wal", exist_ok=True)
        panel.screenshot(path="/tmp/shots-wal/protection-panel.png")
        page.screenshot(path="/tmp/shots-wal/source-page.png", full_page=True)


def cluster_spool(source):
    from pitr.receiver import spool_dir

    return spool_dir(source.pk) / "wal"


def test_a_committed_row_is_stored_before_its_segment_ends_and_survives_a_crash(cluster, tmp_path):
    # How soon it is stored (the RPO, in seconds) is measured by bench.rpo, not here.
    source = protect(cluster, [local_destination(tmp_path / "local")])
    marker = f"rpo-{uuid.uuid4().hex}"
    with running_supervisor():
        wait_for(lambda: ContinuousProtection.objects.get(source=source).receiver_pid)
        execute(cluster, "CREATE TABLE orders (id serial, note text)")
        time.sleep(1)
        execute(cluster, f"INSERT INTO orders (note) VALUES ('{marker}')")
        # No segment switch: the row lives only in the partial segment.
        holder = wait_for(lambda: stored_wal_containing(source, marker.encode()), timeout=120, interval=0.2)
        cluster.kill()  # immediate shutdown, as if the machine lost power
    assert holder.kind == WalSegment.PARTIAL and holder.name.endswith(".partial")
    # What is stored after the crash still holds the row.
    assert stored_wal_containing(source, marker.encode()) is not None


def test_a_killed_receiver_is_restarted_and_no_segment_is_lost(cluster, tmp_path):
    source = protect(cluster, [local_destination(tmp_path / "local")])
    with running_supervisor():
        first = write_wal(cluster, megabytes=2)
        wait_for(lambda: wal.is_stored(source, first))
        pid = ContinuousProtection.objects.get(source=source).receiver_pid
        os.kill(pid, signal.SIGKILL)
        write_wal(cluster, megabytes=2, switch=False)  # written while no receiver runs: the slot keeps it
        protection = wait_for(
            lambda: (
                ContinuousProtection.objects.filter(source=source, receiver_restarts=1, receiver_pid__isnull=False)
                .exclude(receiver_pid=pid)
                .first()
            )
        )
        assert protection.receiver_error  # why it stopped, for the page
        last = write_wal(cluster, megabytes=2)
        wait_for(lambda: wal.is_stored(source, last))
    names = [segment.name for segment in stored(source)]
    assert wal.missing_segments(source, names[0], names[-1]) == []
    assert len(names) >= 6
    report = wal.continuity(source)
    assert report["ok"] and report["to"] == last

    # A segment disappears from storage: the continuity check and an alert name it.
    gone = stored(source)[2]
    for copy in gone.copies.all():
        copy.destination.storage().delete(copy.key)
    gone.delete()
    report = wal.continuity(source)
    assert report["missing"] == [gone.name]
    monitoring.check_wal_protection()
    alert = Alert.objects.get(kind=Alert.WAL_GAP, resolved_at__isnull=True)
    assert gone.name in alert.title and alert.source_id == source.pk
    # Storing it again resolves the alert.
    wal.ship_wal_file(
        ContinuousProtection.objects.get(source=source),
        gone.name,
        wal.walfiles.BytesDump(Path(cluster.datadir, "pg_wal", gone.name).read_bytes()),
    )
    monitoring.check_wal_protection()
    assert not Alert.objects.filter(kind=Alert.WAL_GAP, resolved_at__isnull=True).exists()


def test_the_password_reaches_pg_receivewal_only_through_its_environment(settings, tmp_path, admin_client):
    from tests.harness.pg import TEST_PASSWORD, Cluster

    settings.WAL_SPOOL_DIR = tmp_path / "spool"
    cluster = Cluster(auth="scram-sha-256", password=TEST_PASSWORD, initdb_args=("--wal-segsize=1",))
    try:
        source = protect(cluster, [local_destination(tmp_path / "local")])
        with running_supervisor():
            switched_from = write_wal(cluster, megabytes=1)
            wait_for(lambda: wal.is_stored(source, switched_from))
            pid = ContinuousProtection.objects.get(source=source).receiver_pid
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert "--slot" in command_line and TEST_PASSWORD not in command_line
            assert TEST_PASSWORD not in admin_client.get(f"/pitr/sources/{source.pk}/protection/").content.decode()
    finally:
        cluster.stop()
