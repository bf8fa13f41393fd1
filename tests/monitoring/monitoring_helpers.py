"""Sources, plans and finished backups for the monitoring tests, written
straight into the catalog (no dump runs), then announced through the same
hooks a worker calls when a backup ends."""

from datetime import UTC, datetime, timedelta

import pytest

from catalog import services
from catalog.alerts import hooks, notify
from catalog.models import Backup, BackupPlan, Copy, Destination, Source

# A Monday, 03:00 UTC: the slot of a nightly plan.
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def make_source(name="Inventory DB", **fields):
    source = Source(name=name, engine="sqlite", sqlite_path=f"/srv/{name.lower().replace(' ', '-')}.sqlite3", **fields)
    return services.save_source("test", source)


def make_destination(name="Local disk", kind="local", path="/srv/backups", **fields):
    if kind == "s3":
        fields = {"bucket": "offsite", "offsite": True, **fields}
        path = ""
    return services.save_destination("test", Destination(name=name, kind=kind, path=path, **fields))


def make_plan(source, destinations=None, name="Nightly", schedule="0 3 * * *", **fields):
    # No verification policy: the tick must not start real verifications of fake backups.
    fields = {"verify_new_backups": False, "restore_test_days": 0, "checksum_all_days": 0, "format": "sqlite", **fields}
    plan = BackupPlan(name=name, source=source, schedule=schedule, **fields)
    destinations = destinations or [Destination.objects.filter(name="Local disk").first() or make_destination()]
    return services.save_plan("test", plan, destinations=destinations)


def finished_backup(
    plan, status=Backup.SUCCEEDED, at=None, raw_bytes=1000, error="", minutes=5, copies=None, announce=True
):
    """A backup of `plan` that started at `at` (default now) and ran `minutes`.
    `copies` maps destinations to (copy status, error); by default every
    destination of the plan holds a durable copy when the backup has data."""
    from django.utils import timezone

    at = at or timezone.now()
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        status=status,
        format=plan.format,
        compression="zstd",
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(minutes=minutes),
        raw_bytes=raw_bytes,
        stored_bytes=raw_bytes // 2,
        error=error,
        trigger="schedule",
    )
    if copies is None:
        fate = (
            (Copy.DURABLE, "") if status in Backup.WITH_DATA else (Copy.FAILED, "Removed: the backup did not complete.")
        )
        copies = {destination: fate for destination in plan.destinations.all()}
    for destination, (copy_status, copy_error) in copies.items():
        Copy.objects.create(
            backup=backup,
            destination=destination,
            status=copy_status,
            error=copy_error,
            key=f"{plan.source.slug}/{backup.pk}",
            size=backup.stored_bytes,
        )
    if announce:
        hooks.backup_finished(backup)
    return backup


def reload(obj):
    obj.refresh_from_db()
    return obj


@pytest.fixture
def dispatched(monkeypatch):
    """What was handed to the channels: (kind, key, event) per dispatch; a
    quiet resolve (only an open PagerDuty incident is closed) is "resolved quietly"."""
    calls = []

    def record(alert, event, quiet=False):
        calls.append((alert.kind, alert.key, f"{event} quietly" if quiet else event))

    monkeypatch.setattr(notify, "dispatch", record)
    return calls
