"""Finished backups for the alerts tests, written straight into the catalog
(no dump runs) and announced through the same hooks a worker calls when a
backup ends, and what the channels were handed. Their sources and plans are
tests/factories.py's recorded_source and recorded_plan."""

from datetime import UTC, datetime, timedelta

import pytest

from catalog.alerts import hooks, notify
from catalog.models import Backup, Copy

# A Monday, 03:00 UTC: the slot of a nightly plan.
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


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
