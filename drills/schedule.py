"""When each kind of drill is due for a source, and when it is overdue.

A kind is due `every_days` after the last drill of that kind that passed or,
before the first one, after the source's first good backup (there is nothing
to drill before that). It is overdue a day later: an automatic drill queued
by the tick has that long to run before anyone is alerted."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from catalog.models import Backup, Source
from drills.models import Drill, DrillSchedule

KINDS = [Drill.CHECKSUM, Drill.PARTIAL, Drill.FULL]
KIND_LABELS = dict(Drill.KIND_CHOICES)
# Between due and overdue: time for an automatic drill to be picked up and run.
GRACE = timedelta(days=1)


def schedule_of(source: Source) -> DrillSchedule:
    """The source's schedule, created with the guide's defaults (30/91/365 days) on first use."""
    schedule, _ = DrillSchedule.objects.get_or_create(source=source)
    return schedule


def every_days(schedule: DrillSchedule, kind: str) -> int:
    return getattr(schedule, f"{kind}_every_days")


@dataclass
class KindStatus:
    """One kind of drill for one source, as the pages and the tick see it."""

    kind: str
    every_days: int
    last: Drill | None  # the latest finished drill, passed or failed
    last_passed: Drill | None
    active: Drill | None  # queued or running
    due_at: datetime | None  # None: no good backup yet, nothing to drill

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def overdue_at(self) -> datetime | None:
        return self.due_at + GRACE if self.due_at else None

    def is_due(self, now: datetime | None = None) -> bool:
        return self.due_at is not None and (now or timezone.now()) >= self.due_at

    def is_overdue(self, now: datetime | None = None) -> bool:
        overdue_at = self.overdue_at  # None exactly when due_at is
        return overdue_at is not None and (now or timezone.now()) >= overdue_at


def first_good_at(source: Source) -> datetime | None:
    first = source.backups.good().order_by("finished_at").values_list("finished_at", flat=True)
    return first.first()


def status_of(
    source: Source, kind: str, schedule: DrillSchedule | None = None, first_good: datetime | None = None
) -> KindStatus:
    schedule = schedule or schedule_of(source)
    drills = Drill.objects.filter(source=source, kind=kind)
    last_passed = drills.filter(status=Drill.PASSED).first()  # ordered newest first
    reference = last_passed.performed_at if last_passed else (first_good or first_good_at(source))
    period = every_days(schedule, kind)
    return KindStatus(
        kind=kind,
        every_days=period,
        last=drills.filter(status__in=(Drill.PASSED, Drill.FAILED)).first(),
        last_passed=last_passed,
        active=drills.filter(status__in=Drill.ACTIVE_STATUSES).first(),
        due_at=reference + timedelta(days=period) if reference else None,
    )


def statuses_of(source: Source) -> list[KindStatus]:
    """The three kinds, checksum first, for one source."""
    schedule, first_good = schedule_of(source), first_good_at(source)
    return [status_of(source, kind, schedule, first_good) for kind in KINDS]


def sources_with_backups() -> QuerySet[Source]:
    return Source.objects.filter(pk__in=Backup.objects.good().values("source_id"))
