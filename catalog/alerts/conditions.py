"""The alert conditions besides source health. Each is an Alert kind with a
stable key: opened when the condition starts, updated while it lasts, resolved
when it clears. Job outcomes are judged as each job ends (catalog.alerts.hooks);
storage and stuck jobs are judged by the one-minute tick."""

import statistics
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from catalog.alerts import problems
from catalog.alerts.models import Alert
from catalog.models import (
    Backup,
    BackupPlan,
    Copy,
    Destination,
    Source,
    ThreeTwoOne,
    Verification,
    three_two_one_missing,
)
from catalog.text import duration_text, moment_text, size_text

if TYPE_CHECKING:
    # catalog.lifecycle reaches this module through catalog.services and catalog.alerts.hooks.
    from catalog.lifecycle import PruneReport

# How many earlier good backups of a plan tell what is usual (size, duration).
HISTORY = 7
MIN_HISTORY_FOR_SIZE = 3
# A running backup is stuck when it takes this many times its usual duration…
STUCK_DURATION_FACTOR = 3
# …and at least this long, so that quick plans do not alert on a slow minute.
STUCK_RUNNING_MINIMUM = timedelta(minutes=30)


def raise_problem(kind: str, key: str, *, source: Source | None, **fields: Any) -> Alert | None:
    """Opens (or updates) a problem about `source`, unless its monitoring is
    paused: a paused source raises nothing, though its problems still clear."""
    if source is not None and source.paused:
        return None
    alert, _ = problems.open_alert(kind, key, source=source, **fields)
    return alert


# --- backups ----------------------------------------------------------------


def backup_finished(backup: Backup) -> None:
    """Everything a finished backup can open or clear besides source health."""
    check_partial(backup)
    if backup.status == Backup.SUCCEEDED and backup.plan_id:
        check_size(backup)
        check_three_two_one()


def partial_key(backup: Backup) -> str:
    return f"plan:{backup.plan_id}" if backup.plan_id else f"source:{backup.source_id}"


def check_partial(backup: Backup) -> None:
    key = partial_key(backup)
    if backup.status == Backup.SUCCEEDED:
        problems.resolve_alert(Alert.BACKUP_PARTIAL, key, f"Backup #{backup.pk} succeeded with every copy durable.")
        return
    if backup.status != Backup.PARTIAL:
        return  # a failed run is the source's health problem; a cancelled one is nobody's
    copies = list(backup.copies.select_related("destination"))
    failed = [copy for copy in copies if copy.status != Copy.DURABLE]
    durable = [str(copy.destination) for copy in copies if copy.status == Copy.DURABLE]
    of_what = f"plan {backup.plan}" if backup.plan_id else str(backup.source)
    lost = "; ".join(f"{copy.destination}: {copy.error or 'no error recorded'}" for copy in failed)
    kept = f" Durable in {', '.join(durable)} only." if durable else ""
    raise_problem(
        Alert.BACKUP_PARTIAL,
        key,
        source=backup.source,
        title=f"Backup #{backup.pk} of {of_what} is partial: {len(failed)} of {len(copies)} copies failed",
        detail=f"Failed copies — {lost}.{kept} Finished {moment_text(backup.finished_at or timezone.now())}.",
        url=backup.get_absolute_url(),
        severity=Alert.WARNING,
    )


def check_size(backup: Backup) -> None:
    """A good backup much smaller or larger than the plan's usual one may be a
    dropped table or a runaway log table: worth a look, not a page."""
    plan, key = backup.plan, f"plan:{backup.plan_id}"
    assert plan is not None  # backup_finished checks plan_id first
    if not plan.size_tolerance_percent:
        problems.resolve_alert(Alert.SIZE_ANOMALY, key, "The size alert of this plan was turned off.", notify=False)
        return
    previous = list(
        Backup.objects.filter(plan=plan, status=Backup.SUCCEEDED, created_at__lt=backup.created_at)
        .exclude(pk=backup.pk)
        .order_by("-created_at")
        .values_list("raw_bytes", flat=True)[:HISTORY]
    )
    if len(previous) < MIN_HISTORY_FOR_SIZE:
        return
    median = statistics.median(previous)
    if median <= 0:
        return
    change = (backup.raw_bytes - median) / median * 100
    if abs(change) <= plan.size_tolerance_percent:
        problems.resolve_alert(
            Alert.SIZE_ANOMALY,
            key,
            f"Backup #{backup.pk} ({size_text(backup.raw_bytes)}) is "
            f"within {plan.size_tolerance_percent} % of the median {size_text(median)}.",
        )
        return
    direction, adjective = ("below", "smaller") if change < 0 else ("above", "larger")
    percent = round(abs(change))
    raise_problem(
        Alert.SIZE_ANOMALY,
        key,
        source=backup.source,
        title=f"Backup #{backup.pk} of plan {plan} is {percent} % {adjective} than usual",
        detail=f"{size_text(backup.raw_bytes)}, {percent} % {direction} the median {size_text(median)} of the "
        f"previous {len(previous)} good backups (tolerance ±{plan.size_tolerance_percent} %). "
        "Check for a dropped or runaway table.",
        url=backup.get_absolute_url(),
        severity=Alert.WARNING,
    )


THREE_TWO_ONE_KEY = "plans"


def check_three_two_one(opening: bool = True) -> list[BackupPlan]:
    """One alert for every plan that misses 3-2-1, not one per plan: a trial
    with a single local destination misses it in every plan for the same
    reason, and one fix (an off-site destination) mends them all. Judged on
    each enabled plan's latest stored backup (a plan that has not run yet is
    not judged), leaving out paused sources. A finished backup may open it;
    a plan or source that changed (`opening` False) only brings an open one
    up to date or resolves it. Returns the plans that miss it."""
    from catalog.models import BackupPlan

    short = []
    for plan in BackupPlan.objects.filter(enabled=True, source__paused=False).select_related("source").order_by("name"):
        rule = plan.three_two_one()
        if rule["backup"] is not None and not rule["ok"]:
            short.append((plan, rule))
    # Before this one alert there was one per plan (key plan:<id>): they fold into it.
    for key in (
        Alert.objects.filter(kind=Alert.THREE_TWO_ONE, resolved_at__isnull=True)
        .exclude(key=THREE_TWO_ONE_KEY)
        .values_list("key", flat=True)
    ):
        problems.resolve_alert(
            Alert.THREE_TWO_ONE, key, "Replaced by one alert for every plan that misses 3-2-1.", notify=False
        )
    if not short:
        problems.resolve_alert(
            Alert.THREE_TWO_ONE, THREE_TWO_ONE_KEY, "The latest backup of every enabled plan meets 3-2-1."
        )
        return []
    if not opening and not problems.open_alerts(Alert.THREE_TWO_ONE, THREE_TWO_ONE_KEY).exists():
        return [plan for plan, _ in short]
    from django.urls import reverse

    plans = [plan for plan, _ in short]
    sources = {plan.source_id for plan in plans}
    problems.open_alert(
        Alert.THREE_TWO_ONE,
        THREE_TWO_ONE_KEY,
        title=(f"Plan {plans[0]} does not meet 3-2-1" if len(plans) == 1 else f"{len(plans)} plans do not meet 3-2-1"),
        detail=f"{three_two_one_shortfall(short)} {three_two_one_advice(short)}",
        url=plans[0].get_absolute_url() if len(plans) == 1 else reverse("plan_list"),
        source=plans[0].source if len(sources) == 1 else None,
        severity=Alert.WARNING,
    )
    return plans


def three_two_one_shortfall(short: Sequence[tuple[BackupPlan, ThreeTwoOne]]) -> str:
    """What each plan's latest backup lacks, plans that lack the same named together."""
    groups: dict[tuple[str, ...], list[str]] = {}  # {what is missing: plans that lack it}
    for plan, rule in short:
        assert rule["backup"] is not None  # check_three_two_one leaves out plans not yet judged
        groups.setdefault(tuple(rule["missing"]), []).append(f"{plan} (backup #{rule['backup'].pk})")
    return " ".join(
        f"{and_list(names)} lack{'s' if len(names) == 1 else ''} {'; '.join(missing)}."
        for missing, names in groups.items()
    )


def three_two_one_advice(short: Sequence[tuple[BackupPlan, ThreeTwoOne]]) -> str:
    """What to do, naming a destination that would mend it when there is one."""
    lacking = [plan for plan, _ in short if not meets_three_two_one(set(plan.destinations.all()))]
    if not lacking:
        return (
            f"{'Its' if len(short) == 1 else 'Their'} destinations meet it as set up now, but the latest "
            f"backup{'' if len(short) == 1 else 's'} did not reach every one (partial, or taken before a "
            f"destination was added): the alert clears once {next_backups(short)} stored in every one."
        )
    if len(short) == 1:
        these = "the plan"
    else:
        these = "these plans" if len(lacking) == len(short) else and_list([str(plan) for plan in lacking])
    configured = [set(plan.destinations.all()) for plan in lacking]
    ready = [
        d
        for d in Destination.objects.order_by("name")
        if all(d not in ds and meets_three_two_one(ds | {d}) for ds in configured)
    ]
    if ready:
        what = f"Tick {and_list([str(d) for d in ready[:3]], 'or')} in {these} (Edit, Destinations)"
    else:
        what = (
            "Add a destination of another kind, away from this machine (an S3, Azure or Google Cloud Storage "
            f"bucket, or an SFTP server, marked off-site), on the Destinations page, and tick it in {these}"
        )
    return f"To meet it: {what}. The alert clears once {next_backups(short)} stored there too."


def next_backups(short: Sequence[object]) -> str:
    return "its next backup is" if len(short) == 1 else "their next backups are"


def meets_three_two_one(destinations: Collection[Destination]) -> bool:
    return not three_two_one_missing(destinations)


def and_list(names: Sequence[str], conjunction: str = "and") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


# --- verifications and restores ------------------------------------------------


def verification_key(verification: Verification) -> str:
    return f"source:{verification.source_id}:{verification.kind}"


def verification_finished(verification: Verification) -> None:
    key, what = verification_key(verification), verification.get_kind_display()
    if verification.status == Verification.PASSED:
        problems.resolve_alert(Alert.VERIFICATION_FAILED, key, f"{what} of backup #{verification.backup_id} passed.")
    elif verification.status == Verification.FAILED:
        raise_problem(
            Alert.VERIFICATION_FAILED,
            key,
            source=verification.source,
            title=f"{what} of {verification.source} failed",
            detail=f"Backup #{verification.backup_id}: {verification.summary or 'no summary recorded'} "
            f"(finished {moment_text(verification.finished_at or timezone.now())}).",
            url=verification.get_absolute_url(),
            severity=Alert.CRITICAL,
        )


def restore_finished(job: Any) -> None:
    """`job` is a restore.models.RestoreJob, of an app above the catalog that it cannot import."""
    key = f"source:{job.source_id}"
    if job.status == job.SUCCEEDED:
        problems.resolve_alert(Alert.RESTORE_FAILED, key, f"Restore #{job.pk} of {job.source} succeeded.")
    elif job.status == job.FAILED:
        raise_problem(
            Alert.RESTORE_FAILED,
            key,
            source=job.source,
            title=f"Restore #{job.pk} of {job.source} failed",
            detail=f"{job.summary or 'No summary recorded.'} Restoring backup #{job.backup_id} into "
            f"{job.target_database}; finished {moment_text(job.finished_at or timezone.now())}.",
            url=job.get_absolute_url(),
            severity=Alert.CRITICAL,
        )


# --- storage (tick) -------------------------------------------------------------


def storage_findings(destination: Destination, share: float) -> list[str]:
    """What is too full about a destination, in words (empty when nothing)."""
    findings = []
    quota = destination.quota_bytes()
    if quota:
        used = destination.used_bytes()
        if used / quota >= share:
            findings.append(f"{size_text(used)} of the {size_text(quota)} quota used ({round(used / quota * 100)} %)")
    disk = destination.disk_usage()
    if disk and disk.total:
        total, free = disk.total, disk.free
        if (total - free) / total >= share:
            findings.append(
                f"The disk under {destination.path} is {round((total - free) / total * 100)} % full "
                f"({size_text(free)} free of {size_text(total)})"
            )
    return findings


def check_storage() -> list[int]:
    """Destinations above settings.STORAGE_ALERT_SHARE of their quota or disk.
    Returns the ids of those now over."""
    share, over = settings.STORAGE_ALERT_SHARE, []
    for destination in Destination.objects.all():
        key = f"destination:{destination.pk}"
        findings = storage_findings(destination, share)
        if not findings and not destination.reachable_here():
            continue  # its disk is seen from its own host's tick only: an alert stays until that one resolves it
        if not findings:
            problems.resolve_alert(Alert.STORAGE_FULL, key, f"{destination} is below {round(share * 100)} % again.")
            continue
        over.append(destination.pk)
        problems.open_alert(
            Alert.STORAGE_FULL,
            key,
            title=f"Destination {destination} is above {round(share * 100)} %",
            detail=f"{'; '.join(findings)}. Backups will fail when it is full: "
            "prune old backups, raise the quota or add space.",
            url=destination.get_absolute_url(),
            severity=Alert.WARNING,
        )
    return over


# --- stuck jobs (tick) ------------------------------------------------------------


def usual_duration(backup: Backup) -> timedelta | None:
    """The median duration of the plan's previous good backups, or None."""
    rows = (
        Backup.objects.filter(
            plan=backup.plan_id, status=Backup.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False
        )
        .exclude(pk=backup.pk)
        .order_by("-created_at")
        .values_list("started_at", "finished_at")[:HISTORY]
    )
    # Both times are set on every row (filtered above); the check says so to the type checker.
    durations = [finished - started for started, finished in rows if started is not None and finished is not None]
    # median() sorts and halves the sum of the middle two, which timedelta supports;
    # typeshed types it for numbers only.
    return statistics.median(durations) if durations else None  # type: ignore[type-var]


def check_stuck_jobs(now: datetime | None = None) -> list[int]:
    """Backups queued with no worker taking them, or running far longer than
    usual; and clears those that ended. Returns the ids found stuck."""
    now = now or timezone.now()
    stuck = []
    queued_limit = now - timedelta(minutes=settings.STUCK_QUEUED_MINUTES)
    for backup in Backup.objects.filter(status=Backup.QUEUED, created_at__lte=queued_limit).select_related("source"):
        stuck.append(backup.pk)
        raise_problem(
            Alert.STUCK_JOB,
            f"backup:{backup.pk}",
            source=backup.source,
            title=f"Backup #{backup.pk} of {backup.source} is stuck in the queue",
            detail=f"Queued {moment_text(backup.created_at)} and still not taken after "
            f"{settings.STUCK_QUEUED_MINUTES} min: no worker has taken it: is the task cluster running?",
            url=backup.get_absolute_url(),
            severity=Alert.CRITICAL,
        )
    running = Backup.objects.filter(status=Backup.RUNNING, started_at__lte=now - STUCK_RUNNING_MINIMUM)
    for backup in running.select_related("source"):
        assert backup.started_at is not None  # filtered on started_at__lte
        usual = usual_duration(backup) if backup.plan_id else None
        if usual is None or now - backup.started_at <= max(STUCK_DURATION_FACTOR * usual, STUCK_RUNNING_MINIMUM):
            continue  # without history there is no "usual" to compare with
        stuck.append(backup.pk)
        raise_problem(
            Alert.STUCK_JOB,
            f"backup:{backup.pk}",
            source=backup.source,
            title=f"Backup #{backup.pk} of {backup.source} has been running far longer than usual",
            detail=f"Running since {moment_text(backup.started_at)}, while its plan's backups usually take "
            f"{duration_text(usual)}; {STUCK_DURATION_FACTOR}× that has passed. It may hang on a lock or "
            "a slow destination; cancel it from its page if it does not move.",
            url=backup.get_absolute_url(),
            severity=Alert.CRITICAL,
        )
    clear_ended_jobs()
    return stuck


def clear_ended_jobs() -> None:
    keys = list(Alert.objects.filter(kind=Alert.STUCK_JOB, resolved_at__isnull=True).values_list("key", flat=True))
    ids = {int(key.split(":", 1)[1]): key for key in keys if key.startswith("backup:")}
    statuses = dict(Backup.objects.filter(pk__in=ids).values_list("pk", "status"))
    for pk, key in ids.items():
        status = statuses.get(pk)
        if status not in Backup.ACTIVE_STATUSES:
            ended = f"it ended {status}" if status else "it is gone from the catalog"
            problems.resolve_alert(Alert.STUCK_JOB, key, f"Backup #{pk} is no longer stuck: {ended}.")


# --- master key age -----------------------------------------------------------


def check_key_rotation(now: datetime | None = None) -> str | None:
    """The active master key older than KEY_ROTATION_DAYS raises a reminder
    (the guide asks for yearly rotation); a rotation resolves it, since the
    reminder names the key. Returns the id of the key due, or None."""
    from django.urls import reverse

    from catalog.models import Key

    now = now or timezone.now()
    active = Key.objects.filter(is_active=True).first()
    due_key = f"key:{active.key_id}" if active else None
    for alert in Alert.objects.filter(kind=Alert.KEY_ROTATION_DUE, resolved_at__isnull=True).exclude(key=due_key):
        problems.resolve_alert(
            Alert.KEY_ROTATION_DUE,
            alert.key,
            f"Master key {alert.key.split(':', 1)[1]} was rotated: "
            f"{active.key_id if active else 'another key'} is active now.",
        )
    if active is None:
        return None
    assert due_key is not None  # set whenever active is
    age = now - active.created_at
    if age < timedelta(days=settings.KEY_ROTATION_DAYS):
        problems.resolve_alert(
            Alert.KEY_ROTATION_DUE,
            due_key,
            f"The rotation period is now {settings.KEY_ROTATION_DAYS} days.",
            notify=False,
        )
        return None
    raise_problem(
        Alert.KEY_ROTATION_DUE,
        due_key,
        source=None,
        title=f"Master key {active.key_id} is {age.days} days old: rotate it",
        detail=f"The active master key was created {moment_text(active.created_at)}; keys are rotated every "
        f"{settings.KEY_ROTATION_DAYS} days (KEY_ROTATION_DAYS). Rotate it on the Keys page: backups are "
        "re-wrapped, not re-encrypted.",
        url=reverse("key_list"),
        severity=Alert.WARNING,
    )
    return active.key_id


# --- retention ----------------------------------------------------------------------


def retention_finished(plan: BackupPlan, report: "PruneReport") -> None:
    """A plan whose retention could not be applied keeps backups it should
    have pruned (and its storage grows): say so once, with what went wrong,
    until a run applies the rule cleanly (catalog.lifecycle.prune_plan_checked)."""
    key = f"plan:{plan.pk}"
    if not report.failure and not report.errors:
        problems.resolve_alert(Alert.RETENTION_FAILED, key, f"Retention of plan {plan} applied: {report.summary()}.")
        return
    if report.failure:
        title = f"Retention of plan {plan} could not be applied"
        detail = (
            f"Nothing of this plan was pruned: {report.failure}. Other plans are pruned as usual. "
            "Check the plan's retention rule (saving it again shows what is out of bounds); "
            "the worker log has the details."
        )
    else:
        title = f"Retention of plan {plan} could not remove {len(report.errors)} backup(s)"
        lost = "; ".join(f"backup #{pk}: {detail}" for pk, detail in report.errors[:5])
        detail = f"{lost}. They stay in the catalog and are tried again at the next run."
    raise_problem(
        Alert.RETENTION_FAILED,
        key,
        source=plan.source,
        title=title,
        detail=detail,
        url=plan.get_absolute_url(),
        severity=Alert.WARNING,
    )
