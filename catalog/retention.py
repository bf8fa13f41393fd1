"""Which backups a plan keeps: the retention rule as a pure function.

Nothing here touches the database or storage, so the preview, the pruning
task and the property tests all run exactly the same selection.

DESIGN rule 4: never prune the newest good backup, never prune a pinned one
(or one under legal hold), and never count a failed or partial backup as kept.
Partial backups are not part of the rule at all: they are kept only while no
good backup is newer, because then they may hold the newest data there is.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

GFS, LAST, DAYS = "gfs", "last", "days"
MODE_CHOICES = [
    (GFS, "Grandfather-father-son (daily, weekly, monthly, yearly)"),
    (LAST, "Keep the last N backups"),
    (DAYS, "Keep everything newer than D days"),
]

# What the labels of the periods look like, for the reasons shown to people.
PERIODS = [
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

    def describe(self):
        if self.mode == LAST:
            rule = f"keep the last {self.last}"
        elif self.mode == DAYS:
            rule = f"keep everything newer than {self.days} days"
        else:
            rule = f"{self.daily} daily, {self.weekly} weekly, {self.monthly} monthly, {self.yearly} yearly"
        return f"{rule}; at least {self.minimum}" if self.minimum else rule

    def prune_reason(self):
        if self.mode == LAST:
            return f"older than the last {self.last}"
        if self.mode == DAYS:
            return f"older than {self.days} days"
        return "not the newest of a kept day, week, month or year"


@dataclass(frozen=True)
class Candidate:
    """What the rule needs to know about one stored backup."""

    id: int
    created_at: datetime  # timezone-aware
    good: bool  # succeeded: every copy durable
    hold: str = ""  # "pinned" or "legal hold" when set
    not_good: str = "partial"  # why a backup that is not good is not, in the reasons below


@dataclass
class Decision:
    candidate: Candidate
    reasons: list = field(default_factory=list)  # why it is kept; empty means prune
    prune_reason: str = ""

    @property
    def keep(self):
        return bool(self.reasons)

    def explain(self):
        return ", ".join(self.reasons) if self.keep else self.prune_reason


def newest_first(candidates):
    return sorted(candidates, key=lambda c: (c.created_at, c.id), reverse=True)


def select(candidates, policy, tz, now):
    """Returns a Decision for every candidate, newest first."""
    ordered = newest_first(candidates)
    decisions = {c.id: Decision(c) for c in ordered}
    good = [c for c in ordered if c.good]

    for candidate in ordered:
        if candidate.hold:
            decisions[candidate.id].reasons.append(candidate.hold)
    for candidate, reason in rule_keeps(good, policy, tz, now):
        decisions[candidate.id].reasons.append(reason)
    if good:
        newest = decisions[good[0].id]
        if not newest.keep:
            newest.reasons.append("newest good backup")
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
            if not good or candidate.created_at > good[0].created_at:
                decision.reasons.append(f"{candidate.not_good}, no newer good backup")
            else:
                decision.prune_reason = f"{candidate.not_good}, a newer good backup exists"
        else:
            decision.prune_reason = policy.prune_reason()
    return [decisions[c.id] for c in ordered]


def rule_keeps(good, policy, tz, now):
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
            seen = set()
            for candidate in good:
                if len(seen) >= limit:
                    break
                period = period_of(candidate.created_at.astimezone(tz))
                if period not in seen:
                    seen.add(period)
                    yield candidate, f"daily #{len(seen)}" if name == "daily" else f"{name} {period}"
