"""WAL retention and continuity, on stored WAL files: retention keeps exactly
what retained base backups and the recovery window need, and deletes the rest
from every destination; a missing segment is named; the alerts open and clear.
(WAL files here are synthetic 1 MB segments shipped through the real pipeline.)"""

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.alerts.models import Alert
from catalog.audit import AuditEvent
from catalog.engine import wal as walfiles
from catalog.engine.lsn import segment_name_for_position
from catalog.models import BASE_BACKUP_FORMAT, Backup
from pitr import monitoring, wal
from pitr.models import BaseBackupWal, ContinuousProtection, WalSegment
from tests.factories import local_destination, pg_source
from tests.support import files_under

pytestmark = pytest.mark.django_db
MB = 1 << 20


def name(position):
    return segment_name_for_position(1, position, MB)


@pytest.fixture
def protection(tmp_path):
    source = pg_source({"host": "127.0.0.1", "port": 1, "dbname": "orders", "user": "postgres"})
    protection = ContinuousProtection.objects.create(
        source=source, enabled=True, mode=ContinuousProtection.ARCHIVE, check_report={"segment_size": MB}
    )
    protection.destinations.set([local_destination(tmp_path / "wal")])
    protection.root = tmp_path / "wal"
    return protection


def ship(protection, *positions):
    for position in positions:
        wal.ship_wal_file(protection, name(position), walfiles.BytesDump(os.urandom(1024) * 1024))


def base_backup(source, start, end, days_ago, pruned=False):
    created = timezone.now() - timedelta(days=days_ago)
    backup = Backup.objects.create(
        source=source,
        format=BASE_BACKUP_FORMAT,
        compression="zstd",
        status=Backup.SUCCEEDED,
        created_at=created,
        finished_at=created,
        pruned_at=timezone.now() if pruned else None,
    )
    BaseBackupWal.objects.create(
        backup=backup,
        start_lsn="0/0",
        start_segment=name(start),
        end_segment=name(end),
        started_at=created,
        finished_at=created,
    )
    return backup


def test_retention_keeps_exactly_what_base_backups_and_the_window_need(protection):
    source = protection.source
    ship(protection, *range(1, 21))
    base_backup(source, 3, 4, days_ago=30)  # older than the window: its own WAL stays
    anchor = base_backup(source, 8, 9, days_ago=20)  # the newest before the window: replay starts here
    base_backup(source, 15, 16, days_ago=5)
    base_backup(source, 5, 6, days_ago=25, pruned=True)  # pruned: protects nothing
    pruned = wal.prune_wal("retention", source)
    assert sorted(pruned) == [name(p) for p in (1, 2, 5, 6, 7)]
    kept = list(WalSegment.objects.filter(source=source, status=WalSegment.STORED).values_list("name", flat=True))
    assert sorted(kept) == [name(p) for p in (3, 4, *range(8, 21))]
    on_disk = files_under(protection.root)
    assert sorted(on_disk) == sorted(f"wal/{source.slug}/{n}.zst.enc" for n in kept)  # gone from the disk
    gone = WalSegment.objects.get(source=source, name=name(5))
    assert gone.pruned_at and f"base backup #{anchor.pk}" in gone.prune_reason
    assert all(copy.status == "pruned" for copy in gone.copies.all())
    event = AuditEvent.objects.get(action="pitr.prune_wal")
    assert event.changes["pruned"] == 5 and event.changes["first"] == name(1)
    # What retention removed by design is not a gap.
    assert wal.continuity(source)["ok"]
    assert wal.prune_wal("retention", source) == []  # nothing more on a second run


def test_without_base_backups_it_keeps_the_window(protection):
    source = protection.source
    ship(protection, 1, 2, 3)
    WalSegment.objects.filter(name__in=[name(1), name(2)]).update(received_at=timezone.now() - timedelta(days=15))
    assert sorted(wal.prune_wal("retention", source)) == [name(1), name(2)]
    assert [s.name for s in wal.segments_between(source, name(1), name(3))] == [name(3)]


def test_a_missing_segment_is_named_and_alerted_and_base_backups_complete(protection):
    source = protection.source
    ship(protection, 4, 5, 7, 8)
    backup = base_backup(source, 4, 6, days_ago=1)
    BaseBackupWal.objects.filter(backup=backup).update(wal_complete_at=None)
    assert wal.missing_segments(source, name(4), name(8)) == [name(6)]
    assert [s.name for s in wal.segments_between(source, name(4), name(8))] == [name(p) for p in (4, 5, 7, 8)]
    report = wal.continuity(source)
    assert report["missing"] == [name(6)] and report["from"] == name(4) and report["to"] == name(8)
    monitoring.check_wal_protection()
    alert = Alert.objects.get(kind=Alert.WAL_GAP, resolved_at__isnull=True)
    assert name(6) in alert.title
    assert BaseBackupWal.objects.get(backup=backup).wal_complete_at is None
    ship(protection, 6)
    assert BaseBackupWal.objects.get(backup=backup).wal_complete_at is not None
    monitoring.check_wal_protection()
    assert Alert.objects.get(pk=alert.pk).resolved_at is not None


def test_a_partial_counts_until_its_segment_is_complete(protection):
    source = protection.source
    ship(protection, 1)
    wal.ship_wal_file(protection, name(2) + ".partial", walfiles.BytesDump(b"a" * MB))
    wal.ship_wal_file(protection, name(2) + ".partial", walfiles.BytesDump(b"b" * MB))  # grew: replaced
    partial = WalSegment.objects.get(source=source, kind=WalSegment.PARTIAL)
    assert wal.read_wal_bytes(partial) == b"b" * MB
    assert [s.kind for s in wal.segments_between(source, name(1), name(2))] == ["segment", "partial"]
    ship(protection, 2)
    assert not WalSegment.objects.filter(kind=WalSegment.PARTIAL).exists()
    assert not any(n.endswith(".partial.zst.enc") for n in files_under(protection.root))


def test_receiver_and_late_alerts(protection):
    source = protection.source
    protection.mode, protection.slot_name = ContinuousProtection.STREAM, "strongroom_1"
    protection.created_at = timezone.now() - timedelta(minutes=5)
    protection.receiver_heartbeat_at = timezone.now() - timedelta(minutes=3)
    protection.receiver_pid, protection.receiver_error = 4242, "could not connect to server: Connection refused"
    protection.last_segment_at = timezone.now() - timedelta(hours=2)
    protection.slot_lag_bytes = 5 * MB
    protection.save()
    monitoring.check_wal_protection()
    receiver = Alert.objects.get(kind=Alert.WAL_RECEIVER, resolved_at__isnull=True)
    assert "Connection refused" in receiver.detail and receiver.source_id == source.pk
    late = Alert.objects.get(kind=Alert.WAL_LATE, resolved_at__isnull=True)
    assert "5.0 MB" in late.detail
    ContinuousProtection.objects.filter(pk=protection.pk).update(
        receiver_heartbeat_at=timezone.now(), last_segment_at=timezone.now()
    )
    monitoring.check_wal_protection()
    assert not Alert.objects.filter(kind__in=[Alert.WAL_RECEIVER, Alert.WAL_LATE], resolved_at__isnull=True).exists()
