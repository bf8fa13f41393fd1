"""The compliance report: what an auditor asks about a period, in figures.

`build()` returns plain data (a Report of Sections, each a table of plain
values) that the page, the CSV and the PDF all render, so the three never
disagree. Every section reads the catalog with a fixed number of queries,
however many backups the period holds (3-2-1 asks two per plan, as the plan
list does, since it reuses BackupPlan.three_two_one)."""

import calendar
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TypedDict

from croniter import croniter
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.models import AuditEvent, Backup, Key, KeyRotation, Source, Verification
from catalog.text import duration_text, moment_text
from drills.models import Drill
from restore.models import RestoreJob

# The longest period one report covers: a year and a leap day, so that an
# annual review fits and a typo ("2062") does not make the server count
# cron runs for decades.
MAX_DAYS = 366
HOLD_ACTIONS = {"backup.pin": "pinned", "backup.legal_hold": "legal hold", "backup.unpin": "released"}

Cell = str | int | float  # a plain value in a report table


@dataclass
class Section:
    key: str
    title: str
    meaning: str  # one sentence: what the figures mean
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)  # lists of str / int / float, one per column
    flagged: list[bool] = field(default_factory=list)  # per row: True when it needs an auditor's attention
    summary: list[str] = field(default_factory=list)  # sentences with the key figures

    def add(self, row: list[Cell], flag: object = False) -> None:
        self.rows.append(row)
        self.flagged.append(bool(flag))

    def table(self) -> list[tuple[list[Cell], bool]]:
        """(row, flagged) pairs, for templates."""
        return list(zip(self.rows, self.flagged, strict=True))  # add() appends to both


@dataclass
class Report:
    period_start: date
    period_end: date  # inclusive
    sources: list[Source]
    generated_at: datetime
    sections: list[Section]

    def period_text(self) -> str:
        return f"{self.period_start:%Y-%m-%d} to {self.period_end:%Y-%m-%d}"

    def sources_text(self) -> str:
        return ", ".join(source.name for source in self.sources) or "no source"

    def filename(self, extension: str) -> str:
        """strongroom-compliance-2026-10.pdf for a calendar month, else both dates."""
        if is_calendar_month(self.period_start, self.period_end):
            span = f"{self.period_start:%Y-%m}"
        else:
            span = f"{self.period_start:%Y-%m-%d}_{self.period_end:%Y-%m-%d}"
        return f"strongroom-compliance-{span}.{extension}"

    def section(self, key: str) -> Section:
        return next(section for section in self.sections if section.key == key)


def last_full_month(today: date) -> tuple[date, date]:
    """The calendar month before the one `today` falls in: (first day, last day)."""
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def is_calendar_month(start: date, end: date) -> bool:
    return start.day == 1 and end == start.replace(day=calendar.monthrange(start.year, start.month)[1])


def midnight(day: date) -> datetime:
    """The start of a calendar day in the site's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def build(
    period_start: date, period_end: date, sources: Iterable[Source] | None = None, now: datetime | None = None
) -> Report:
    """The report for the days period_start..period_end (inclusive, in the
    site's time zone) and the given sources (default: all)."""
    now = now or timezone.now()
    if sources is None:
        sources = Source.objects.all()
    sources = list(Source.objects.filter(pk__in=[s.pk for s in sources]).prefetch_related("plans"))
    window = Window(midnight(period_start), midnight(period_end + timedelta(days=1)), now)
    backups = period_backups(sources, window)
    sections = [
        daily_backups(sources, backups, window, period_start, period_end),
        rpo_breaches(sources, backups, window),
        verification_coverage(sources, backups, window),
        restore_times(sources, window),
        three_two_one(sources),
        retention_actions(sources, window),
        key_events(window),
    ]
    return Report(period_start, period_end, sources, now, sections)


@dataclass
class Window:
    start: datetime
    end: datetime  # exclusive
    now: datetime

    def stop(self) -> datetime:
        """Where measuring stops: the end of the period, or now if it is not over."""
        return min(self.end, self.now)

    def filter(self, name: str) -> dict[str, datetime]:
        return {f"{name}__gte": self.start, f"{name}__lt": self.end}


class PeriodBackup(TypedDict):
    """A good backup of the period, as `period_backups` reads it."""

    pk: int
    source_id: int
    created_at: datetime
    snapshot: datetime
    finished_at: datetime | None
    checksummed: bool


def period_backups(sources: list[Source], window: Window) -> list[PeriodBackup]:
    """The good backups that started or finished in the period, as plain
    dicts: one query shared by the first three sections."""
    checksummed = Verification.objects.filter(
        backup=OuterRef("pk"), kind=Verification.CHECKSUM, status=Verification.PASSED
    )
    rows = (
        Backup.objects.filter(source__in=sources)
        .good()
        .filter(Q(**window.filter("created_at")) | Q(**window.filter("finished_at")))
        .annotate(snapshot=Coalesce("started_at", "created_at"), checksummed=Exists(checksummed))
        .values("pk", "source_id", "created_at", "snapshot", "finished_at", "checksummed")
    )
    return list(rows)


# --- 1. backups taken per day against plan


def daily_backups(
    sources: list[Source], backups: list[PeriodBackup], window: Window, first_day: date, last_day: date
) -> Section:
    section = Section(
        "daily",
        "Backups taken per day against plan",
        "For each source and day, the good backups taken that day against the runs its enabled plans' "
        "schedules expected; a day is short when fewer were taken than expected.",
        ["Source", "Day", "Good backups", "Expected runs", "Short"],
    )
    taken = Counter(
        (b["source_id"], timezone.localdate(b["created_at"]))
        for b in backups
        if window.start <= b["created_at"] < window.end
    )
    today = timezone.localdate(window.now)
    days = [first_day + timedelta(days=n) for n in range((min(last_day, today) - first_day).days + 1)]
    for source in sources:
        expected = expected_runs(source, window)
        short = [day for day in days if taken[source.pk, day] < expected[day]]
        for day in days:
            section.add(
                [source.name, day.isoformat(), taken[source.pk, day], expected[day], "short" if day in short else ""],
                flag=day in short,
            )
        met = len(days) - len(short)
        sentence = (
            f"{source.name}: {met} of {len(days)} days met the plan "
            f"({sum(taken[source.pk, d] for d in days)} good backups, {sum(expected.values())} runs expected)"
        )
        section.summary.append(
            f"{sentence}; short on {', '.join(d.isoformat() for d in short)}." if short else f"{sentence}."
        )
    return section


def expected_runs(source: Source, window: Window) -> Counter[date]:
    """{day: runs} that the source's enabled plans' cron schedules expected in
    the period up to now, counted from each plan's creation."""
    runs: Counter[date] = Counter()
    for plan in source.plans.all():
        if not plan.enabled or not croniter.is_valid(plan.schedule):
            continue
        start = max(window.start, plan.created_at)
        # get_next is strictly after its start: step back a second so that a
        # run at exactly midnight on the first day counts.
        schedule = croniter(plan.schedule, timezone.localtime(start) - timedelta(seconds=1))
        while (run := schedule.get_next(datetime)) < window.stop():
            runs[timezone.localdate(run)] += 1
    return runs


# --- 2. RPO breaches


def rpo_breaches(sources: list[Source], backups: list[PeriodBackup], window: Window) -> Section:
    section = Section(
        "rpo",
        "RPO breaches",
        "An RPO breach is a stretch of time during which the newest good backup was older than the source's "
        "RPO target (when no target is set: its plans' expected interval plus the monitoring grace); a backup "
        "counts from its snapshot, a breach still open at the end of the period is cut there, one open now is "
        "ongoing.",
        ["Source", "Target", "Breach started", "Breach ended", "Duration", "Minutes"],
    )
    before = newest_snapshot_before(sources, window.start)
    by_source = defaultdict(list)
    for b in backups:
        by_source[b["source_id"]].append(b["snapshot"])
    for source in sources:
        target = rpo_target(source)
        if target is None:
            section.summary.append(f"{source.name}: no RPO target and no enabled plan, so nothing to measure.")
            continue
        reference = before.get(source.pk) or first_plan_created(source)
        breaches = breach_intervals(target, reference, by_source[source.pk], window)
        total = timedelta()
        for start, end in breaches:
            length = (window.now if end is None else end) - start  # None: ongoing
            total += length
            section.add(
                [
                    source.name,
                    duration_text(target),
                    moment_text(start),
                    "ongoing" if end is None else moment_text(end),
                    duration_text(length),
                    int(length.total_seconds() // 60),
                ],
                flag=True,
            )
        label = f"{source.name} (target {duration_text(target)})"
        section.summary.append(
            f"{label}: {counted(len(breaches), 'breach', 'breaches')}, {duration_text(total)} in all."
            if breaches
            else f"{label}: no breach."
        )
    return section


def rpo_target(source: Source) -> timedelta | None:
    if source.rpo_minutes:
        return timedelta(minutes=source.rpo_minutes)
    interval = source.expected_interval()
    return interval + source.grace() if interval else None


def first_plan_created(source: Source) -> datetime:
    """Before a source's first good backup, its age counts from its first
    enabled plan, as monitoring does (see Source.deadlines)."""
    created = [plan.created_at for plan in source.plans.all() if plan.enabled]
    return min(created) if created else source.created_at


def newest_snapshot_before(sources: list[Source], moment: datetime) -> dict[int, datetime]:
    """{source id: when the newest good backup taken before `moment` was taken}."""
    newest = Backup.objects.filter(source=OuterRef("pk")).good()
    newest = newest.annotate(snapshot=Coalesce("started_at", "created_at")).filter(snapshot__lt=moment)
    newest = newest.order_by("-snapshot")
    rows = (
        Source.objects.filter(pk__in=[s.pk for s in sources])
        .annotate(newest=Subquery(newest.values("snapshot")[:1]))
        .values_list("pk", "newest")
    )
    return {pk: newest for pk, newest in rows if newest}


def breach_intervals(
    target: timedelta, reference: datetime, snapshots: Iterable[datetime], window: Window
) -> list[tuple[datetime, datetime | None]]:
    """[(start, end or None while ongoing)] inside the period during which the
    newest good backup was older than `target`.

    `reference` is when the newest backup before the period was taken;
    `snapshots` when the period's good backups were taken. A good backup
    counts from its snapshot, as monitoring counts it (Source.last_good_at):
    judging it only once its upload ends would turn every run of a daily plan
    with a 24 h RPO into a breach of a few minutes. Between two backups the
    age only grows, so each gap breaches from the previous snapshot + target
    until the next snapshot."""
    stop = window.stop()
    intervals: list[tuple[datetime, datetime | None]] = []
    newest = reference
    for snapshot in sorted(s for s in snapshots if window.start <= s < stop) + [stop]:
        breach_from = max(window.start, newest + target)
        if breach_from < snapshot:
            intervals.append((breach_from, snapshot))
        newest = max(newest, snapshot)
    if intervals and intervals[-1][1] == stop and stop == window.now:
        intervals[-1] = (intervals[-1][0], None)
    return intervals


# --- 3. verification coverage


def verification_coverage(sources: list[Source], backups: list[PeriodBackup], window: Window) -> Section:
    section = Section(
        "coverage",
        "Verification coverage",
        "The share of the period's good backups whose copies passed a checksum verification, and each source's "
        "latest test restore up to the end of the period with how long the restore took.",
        ["Source", "Good backups", "Checksum-verified", "Coverage", "Latest test restore", "Result", "Restore time"],
    )
    good: Counter[int] = Counter()  # by source id
    verified: Counter[int] = Counter()
    for b in backups:
        if window.start <= b["created_at"] < window.end:
            good[b["source_id"]] += 1
            verified[b["source_id"]] += b["checksummed"]
    latest = latest_test_restores(sources, window.end)
    for source in sources:
        share = percent(verified[source.pk], good[source.pk])
        restore = latest.get(source.pk)
        section.add(
            [
                source.name,
                good[source.pk],
                verified[source.pk],
                share,
                moment_text(restore.finished_at) if restore and restore.finished_at else "none",  # finished ones only
                restore.get_status_display() if restore else "",
                duration_text_or_dash(restore.restore_seconds) if restore else "",
            ],
            flag=(good[source.pk] and verified[source.pk] < good[source.pk])
            or not restore
            or restore.status != Verification.PASSED,
        )
    total_good, total_verified = sum(good.values()), sum(verified.values())
    section.summary.append(
        f"{total_verified} of {total_good} good backups checksum-verified ({percent(total_verified, total_good)})."
    )
    return section


def latest_test_restores(sources: list[Source], before: datetime) -> dict[int, Verification]:
    latest = (
        Verification.objects.filter(
            source=OuterRef("pk"),
            kind=Verification.RESTORE,
            status__in=[Verification.PASSED, Verification.FAILED],
            finished_at__lt=before,
        )
        .order_by("-finished_at")
        .values("pk")[:1]
    )
    ids = Source.objects.filter(pk__in=[s.pk for s in sources]).annotate(latest=Subquery(latest))
    by_id = dict(ids.values_list("latest", "pk"))
    jobs = Verification.objects.in_bulk([pk for pk in by_id if pk])
    return {by_id[pk]: job for pk, job in jobs.items()}


def counted(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "—"


def duration_text_or_dash(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return duration_text(timedelta(seconds=seconds))


# --- 4. restore drills and real restores against the RTO


def restore_times(sources: list[Source], window: Window) -> Section:
    section = Section(
        "restores",
        "Restore drills and restores against the RTO",
        "Every DR drill and real restore in the period with its measured time against the source's RTO target: "
        "within, over, unknown (no measured time or no target) or failed.",
        ["When", "Source", "What", "Result", "Measured time", "RTO target", "Against RTO"],
    )
    names = {source.pk: source for source in sources}
    rows = []
    for drill in Drill.objects.filter(source__in=sources, **window.filter("performed_at")):
        rto = drill.rto_minutes or names[drill.source_id].rto_minutes
        how = drill.get_how_display()
        what = f"{drill.get_kind_display()} ({how[0].lower()}{how[1:]})"
        rows.append((drill.performed_at, names[drill.source_id].name, what, drill.status, drill.seconds, rto))
    for job in RestoreJob.objects.filter(source__in=sources, **window.filter("created_at")):
        duration = job.duration() if job.started_at and job.finished_at else None
        seconds = duration.total_seconds() if duration is not None else None
        what = f"Restore #{job.pk} ({job.get_mode_display().split(':')[0].lower()}, {job.get_target_display().lower()})"
        rows.append(
            (job.created_at, names[job.source_id].name, what, job.status, seconds, names[job.source_id].rto_minutes)
        )
    verdicts: Counter[str] = Counter()
    for when, source_name, what, status, seconds, rto in sorted(rows, key=lambda row: row[0]):
        verdict = rto_verdict(status, seconds, rto)
        verdicts[verdict] += 1
        section.add(
            [
                moment_text(when),
                source_name,
                what,
                status,
                duration_text_or_dash(seconds),
                duration_text(timedelta(minutes=rto)) if rto else "none",
                verdict,
            ],
            flag=verdict in ("over", "failed"),
        )
    section.summary.append(
        f"{counted(len(rows), 'drill or restore', 'drills and restores')}: "
        + ", ".join(f"{verdicts[v]} {v}" for v in ("within", "over", "unknown", "failed"))
        + "."
    )
    return section


def rto_verdict(status: str, seconds: float | None, rto_minutes: int | None) -> str:
    if status == "failed":
        return "failed"
    if status not in ("passed", "succeeded") or seconds is None or not rto_minutes:
        return "unknown"
    return "within" if seconds <= rto_minutes * 60 else "over"


# --- 5. 3-2-1 now


def three_two_one(sources: list[Source]) -> Section:
    section = Section(
        "three_two_one",
        "3-2-1 status now",
        "Whether each plan's latest stored backup has two copies or more, with two providers (kinds of storage), "
        "one of them off-site (before its first backup: its configured destinations); judged now, not over the "
        "period. A destination marked off-site is off-site, and so is the second of two cloud providers.",
        ["Source", "Engine", "Plan", "3-2-1", "Missing", "Copies at", "Judged on"],
    )
    for source in sources:
        plans = list(source.plans.all())
        if not plans:
            section.add([source.name, source.get_engine_display(), "no plan", "not met", "a plan", "", ""], flag=True)
        for plan in plans:
            rule = plan.three_two_one()
            judged = f"backup #{rule['backup'].pk}" if rule["backup"] else "configured destinations"
            section.add(
                [
                    source.name,
                    source.get_engine_display(),
                    plan.name + ("" if plan.enabled else " (disabled)"),
                    "met" if rule["ok"] else "not met",
                    "; ".join(rule["missing"]),
                    "; ".join(rule["providers"]),
                    judged,
                ],
                flag=not rule["ok"],
            )
    met = sum(1 for row in section.rows if row[3] == "met")
    section.summary.append(f"{met} of {len(section.rows)} plans meet 3-2-1.")
    return section


# --- 6. retention actions


def retention_actions(sources: list[Source], window: Window) -> Section:
    section = Section(
        "retention",
        "Retention actions",
        "Backups that retention pruned in the period and why, and the pins and legal holds that kept backups "
        "from it (from the audit trail).",
        ["When", "Action", "Backup", "Source", "Reason"],
    )
    names = {source.pk: source.name for source in sources}
    rows: list[tuple[datetime, str, str, str, str]] = []
    for backup in Backup.objects.filter(source__in=sources, **window.filter("pruned_at")).only(
        "pk", "source_id", "pruned_at", "prune_reason", "created_at"
    ):
        assert backup.pruned_at is not None  # filtered on it
        rows.append(
            (
                backup.pruned_at,
                "pruned",
                f"#{backup.pk} of {moment_text(backup.created_at)}",
                names[backup.source_id],
                backup.prune_reason,
            )
        )
    holds = list(
        AuditEvent.objects.filter(action__in=HOLD_ACTIONS, object_type="backup", **window.filter("created_at"))
    )
    held = {int(event.object_id) for event in holds if event.object_id.isdigit()}
    backup_sources = dict(Backup.objects.filter(pk__in=held, source__in=sources).values_list("pk", "source_id"))
    for event in holds:
        source_id = backup_sources.get(int(event.object_id)) if event.object_id.isdigit() else None
        if source_id is None:
            continue  # a backup of another source
        reason = event.changes.get("reason") or event.changes.get("released") or ""
        rows.append(
            (
                event.created_at,
                f"{HOLD_ACTIONS[event.action]} by {event.actor_label}",
                f"#{event.object_id}",
                names[source_id],
                reason,
            )
        )
    for when, *row in sorted(rows, key=lambda row: row[0]):
        section.add([moment_text(when), *row])
    pruned = sum(1 for row in section.rows if row[1] == "pruned")
    changed = counted(len(section.rows) - pruned, "pin or hold", "pins and holds")
    section.summary.append(f"{counted(pruned, 'backup', 'backups')} pruned, {changed} placed or released.")
    return section


# --- 7. keys


def key_events(window: Window) -> Section:
    section = Section(
        "keys",
        "Key rotations and key events",
        "Master key rotations (the backups' data keys re-wrapped with a new key) and master keys created, retired "
        "or destroyed in the period; keys serve every source.",
        ["When", "Event", "Key", "Details"],
    )
    rows = []
    for rotation in KeyRotation.objects.filter(**window.filter("created_at")).select_related("new_key", "requested_by"):
        details = f"{rotation.get_status_display()}: {rotation.done} of {rotation.total} backups re-wrapped"
        if rotation.previous_key_id:
            details += f", replacing {rotation.previous_key_id}"
        if rotation.requested_by:
            details += f", requested by {rotation.requested_by.get_username()}"
        rows.append((rotation.created_at, f"rotation #{rotation.pk}", rotation.new_key.key_id, details))
    in_window = Q(**window.filter("created_at")) | Q(**window.filter("retired_at")) | Q(**window.filter("destroyed_at"))
    for key in Key.objects.filter(in_window):
        for moment, event in (
            (key.created_at, f"created ({key.get_origin_display().lower()})"),
            (key.retired_at, "retired"),
            (key.destroyed_at, "destroyed"),
        ):
            if moment and window.start <= moment < window.end:
                rows.append((moment, f"key {event}", key.key_id, ""))
    for when, *row in sorted(rows, key=lambda row: row[0]):
        section.add([moment_text(when), *row])
    rotations = sum(1 for row in section.rows if str(row[1]).startswith("rotation"))
    section.summary.append(
        f"{counted(rotations, 'key rotation', 'key rotations')}, "
        f"{counted(len(section.rows) - rotations, 'other key event', 'other key events')}."
    )
    return section
