"""Which backups a plan keeps: the retention rule as a pure function.

Nothing here touches the database or storage, so the preview, the pruning
task and the property tests all run exactly the same selection.

DESIGN rule 4: never prune the newest good backup, never prune a pinned one
(or one under legal hold), and never count a failed or partial backup as kept.
Partial backups are not part of the rule at all: they are kept only while no
good backup is newer, because then they may hold the newest data there is.

Manual backups ("Back up now", the API, a label such as pre-migration) have a
rule of their own: each is kept for the plan's manual_days, or until the
keep_until asked for when it was taken, and takes no place in the plan's rule
meanwhile, so that neither thins the other (a GFS rule keeps one backup a day,
which would prune this morning's pre-migration backup by tonight's run; and
twenty backups a CI job takes in a day would push a week of nightly ones out
of "keep the last 7"). Once its time is up, a manual backup is judged by the
plan's rule like any other: nothing the rule keeps is lost by the change.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

GFS, LAST, DAYS = "gfs", "last", "days"
MODE_CHOICES = [
    (GFS, "Grandfather-father-son (daily, weekly, monthly, yearly)"),
    (LAST, "Keep the last N backups"),
    (DAYS, "Keep everything newer than D days"),
]

# What the labels of the periods look like, for the reasons shown to people.
# Each rule's name and what makes two backups' times fall in the same period.
PERIODS: list[tuple[str, Callable[[datetime], object]]] = [
    ("daily", lambda t: t.date()),
    ("weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: f"{t.year}-{t.month:02d}"),
    ("yearly", lambda t: str(t.year)),
]


@dataclass(frozen=True)
class Policy:
    mode: str = GFS
    daily: int = 30
    weekly: int = 12
    monthly: int = 12
    yearly: int = 5
    last: int = 7
    days: int = 30
    minimum: int = 1
    manual_days: int = 30  # how long a manual backup is kept apart from the rule; 0: the rule judges it at once

    def describe(self) -> str:
        if self.mode == LAST:
            rule = f"keep the last {self.last}"
        elif self.mode == DAYS:
            rule = f"keep everything newer than {self.days} days"
        else:
            rule = f"{self.daily} daily, {self.weekly} weekly, {self.monthly} monthly, {self.yearly} yearly"
        return f"{rule}; at least {self.minimum}" if self.minimum else rule

    def prune_reason(self) -> str:
        if self.mode == LAST:
            return f"older than the last {self.last}"
        if self.mode == DAYS:
            return f"older than {self.days} days"
        return "not the newest of a kept day, week, month or year"

    def describe_manual(self) -> str:
        if not self.manual_days:
            return "manual backups by the same rule"
        return f"manual backups kept {self.manual_days} day{'s' if self.manual_days != 1 else ''}"

    def manual_until(self, candidate: "Candidate") -> datetime | None:
        """Until when the manual rule keeps `candidate` (None: it does not)."""
        if not candidate.manual:
            return None
        if candidate.keep_until is not None:
            return candidate.keep_until
        return candidate.created_at + timedelta(days=self.manual_days) if self.manual_days else None


@dataclass(frozen=True)
class Candidate:
    """What the rule needs to know about one stored backup."""

    id: int
    created_at: datetime  # timezone-aware
    good: bool  # succeeded: every copy durable
    hold: str = ""  # "pinned" or "legal hold" when set
    not_good: str = "partial"  # why a backup that is not good is not, in the reasons below
    manual: str = ""  # what made it, when not its schedule ("manual backup", "backup labelled pre-migration")
    keep_until: datetime | None = None  # asked for when it was taken; None: the plan's manual_days


@dataclass
class Decision:
    candidate: Candidate
    reasons: list[str] = field(default_factory=list)  # why it is kept; empty means prune
    prune_reason: str = ""

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def explain(self) -> str:
        return ", ".join(self.reasons) if self.keep else self.prune_reason


def newest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.created_at, c.id), reverse=True)


def select(candidates: Iterable[Candidate], policy: Policy, tz: tzinfo, now: datetime) -> list[Decision]:
    """Returns a Decision for every candidate, newest first."""
    ordered = newest_first(candidates)
    decisions = {c.id: Decision(c) for c in ordered}
    every_good = [c for c in ordered if c.good]

    for candidate in ordered:
        if candidate.hold:
            decisions[candidate.id].reasons.append(candidate.hold)
    # Manual backups inside their own period: kept, and out of the plan's rule.
    apart = set()
    for candidate in ordered:
        until = policy.manual_until(candidate)
        if until is not None and now < until:
            decisions[candidate.id].reasons.append(f"{candidate.manual}, kept until {day_of(until, tz)}")
            apart.add(candidate.id)
    good = [c for c in every_good if c.id not in apart]

    for candidate, reason in rule_keeps(good, policy, tz, now):
        decisions[candidate.id].reasons.append(reason)
    if good:
        newest = decisions[good[0].id]
        if not newest.keep:
            newest.reasons.append(
                "newest good backup" if good[0] is every_good[0] else "newest good backup under the plan's rule"
            )
    kept_good = sum(1 for c in good if decisions[c.id].keep)
    for candidate in good:
        if kept_good >= policy.minimum:
            break
        if not decisions[candidate.id].keep:
            decisions[candidate.id].reasons.append("minimum keep")
            kept_good += 1

    for candidate in ordered:
        decision = decisions[candidate.id]
        if decision.keep:
            continue
        if not candidate.good:
            if not every_good or candidate.created_at > every_good[0].created_at:
                decision.reasons.append(f"{candidate.not_good}, no newer good backup")
            else:
                decision.prune_reason = f"{candidate.not_good}, a newer good backup exists"
        else:
            decision.prune_reason = policy.prune_reason()
        until = policy.manual_until(candidate)
        if until is not None:
            decision.prune_reason = f"{candidate.manual}, kept until {day_of(until, tz)}; then {decision.prune_reason}"
    return [decisions[c.id] for c in ordered]


def day_of(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d")


def rule_keeps(good: list[Candidate], policy: Policy, tz: tzinfo, now: datetime) -> Iterator[tuple[Candidate, str]]:
    """Yields (candidate, reason) for the good backups the rule itself keeps."""
    if policy.mode == LAST:
        for number, candidate in enumerate(good[: policy.last], start=1):
            yield candidate, f"last #{number}"
    elif policy.mode == DAYS:
        cutoff = now - timedelta(days=policy.days)
        for candidate in good:
            if candidate.created_at >= cutoff:
                yield candidate, f"newer than {policy.days} days"
    else:
        for name, period_of in PERIODS:
            limit = getattr(policy, name)
            seen: set[object] = set()  # periods: a date or a name such as 2026-W05
            for candidate in good:
                if len(seen) >= limit:
                    break
                period = period_of(candidate.created_at.astimezone(tz))
                if period not in seen:
                    seen.add(period)
                    yield candidate, f"daily #{len(seen)}" if name == "daily" else f"{name} {period}"
