"""Property tests for the retention selection (no database: it is pure)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.retention import DAYS, GFS, LAST, Candidate, Policy, select

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ZONES = st.sampled_from([ZoneInfo("UTC"), ZoneInfo("Europe/Amsterdam"), ZoneInfo("Pacific/Auckland")])

policies = st.builds(
    Policy,
    mode=st.sampled_from([GFS, LAST, DAYS]),
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 6),
    yearly=st.integers(0, 3),
    last=st.integers(0, 10),
    days=st.integers(0, 400),
    minimum=st.integers(0, 5),
)


@st.composite
def histories(draw):
    """Backups spread over up to three years, some failed/partial, some pinned."""
    count = draw(st.integers(0, 60))
    offsets = draw(st.lists(st.integers(0, 3 * 365 * 24 * 60), min_size=count, max_size=count))
    candidates = []
    for number, minutes in enumerate(offsets, start=1):
        candidates.append(
            Candidate(
                id=number,
                created_at=NOW - timedelta(minutes=minutes),
                good=draw(st.booleans()) or draw(st.booleans()),
                hold=draw(st.sampled_from(["", "", "", "", "pinned", "legal hold"])),
            )
        )
    return candidates


def kept_ids(decisions):
    return {d.candidate.id for d in decisions if d.keep}


@settings(max_examples=200, deadline=None)
@given(histories(), policies, ZONES)
def test_deterministic_whatever_the_input_order(candidates, policy, tz):
    first = select(candidates, policy, tz, NOW)
    second = select(list(reversed(candidates)), policy, tz, NOW)
    assert [(d.candidate.id, d.explain()) for d in first] == [(d.candidate.id, d.explain()) for d in second]


@settings(max_examples=200, deadline=None)
@given(histories(), policies, ZONES)
def test_never_drops_a_pinned_backup_or_the_newest_good_one(candidates, policy, tz):
    kept = kept_ids(select(candidates, policy, tz, NOW))
    assert {c.id for c in candidates if c.hold} <= kept
    good = sorted((c for c in candidates if c.good), key=lambda c: (c.created_at, c.id))
    if good:
        assert good[-1].id in kept
        assert sum(1 for c in good if c.id in kept) >= min(policy.minimum, len(good))


@settings(max_examples=200, deadline=None)
@given(histories(), policies, ZONES)
def test_keeps_at_most_the_configured_count_per_period(candidates, policy, tz):
    decisions = select(candidates, policy, tz, NOW)
    reasons = [reason for d in decisions for reason in d.reasons]
    if policy.mode == GFS:
        for name in ("daily", "weekly", "monthly", "yearly"):
            assert sum(1 for r in reasons if r.startswith(name)) <= getattr(policy, name)
    if policy.mode == LAST:
        assert sum(1 for r in reasons if r.startswith("last #")) <= policy.last


@settings(max_examples=200, deadline=None)
@given(histories(), policies, ZONES)
def test_failed_and_partial_backups_do_not_count(candidates, policy, tz):
    """The fate of every good backup is the same with or without the others."""
    good_only = [c for c in candidates if c.good]
    with_all = {d.candidate.id: d.explain() for d in select(candidates, policy, tz, NOW) if d.candidate.good}
    alone = {d.candidate.id: d.explain() for d in select(good_only, policy, tz, NOW)}
    assert with_all == alone


@settings(max_examples=200, deadline=None)
@given(histories(), policies, ZONES)
def test_running_it_again_after_pruning_prunes_nothing_more(candidates, policy, tz):
    survivors = [d.candidate for d in select(candidates, policy, tz, NOW) if d.keep]
    again = select(survivors, policy, tz, NOW)
    assert all(d.keep for d in again)


def daily(days_ago, hour=3, number=None):
    return Candidate(id=number or days_ago + 1, created_at=NOW - timedelta(days=days_ago, hours=12 - hour), good=True)


def test_gfs_reasons_read_like_the_calendar():
    candidates = [daily(n) for n in range(0, 120)]
    policy = Policy(daily=3, weekly=2, monthly=2, yearly=1, minimum=0)
    decisions = select(candidates, policy, ZoneInfo("UTC"), NOW)
    kept = {d.candidate.id: d.explain() for d in decisions if d.keep}
    assert kept == {
        1: "daily #1, weekly 2026-W48, monthly 2026-11, yearly 2026",
        2: "daily #2",
        3: "daily #3",
        4: "weekly 2026-W47",  # Sunday 22 November; Monday the 23rd starts W48
        26: "monthly 2026-10",
    }
    assert decisions[-1].prune_reason == "not the newest of a kept day, week, month or year"


def test_calendar_boundaries_follow_the_time_zone():
    # 23:30 UTC on 31 October is already 1 November in Amsterdam.
    late = Candidate(id=1, created_at=datetime(2026, 10, 31, 23, 30, tzinfo=UTC), good=True)
    early = Candidate(id=2, created_at=datetime(2026, 10, 31, 20, 0, tzinfo=UTC), good=True)
    policy = Policy(daily=0, weekly=0, monthly=2, yearly=0, minimum=0)
    assert [d.explain() for d in select([late, early], policy, ZoneInfo("UTC"), NOW)][:1] == ["monthly 2026-10"]
    amsterdam = select([late, early], policy, ZoneInfo("Europe/Amsterdam"), NOW)
    assert [d.explain() for d in amsterdam] == ["monthly 2026-11", "monthly 2026-10"]


def test_a_partial_backup_is_kept_only_while_no_good_one_is_newer():
    older_good = daily(2)
    partial = Candidate(id=50, created_at=NOW - timedelta(days=1), good=False)
    decisions = select([older_good, partial], Policy(mode=LAST, last=1), ZoneInfo("UTC"), NOW)
    assert [d.explain() for d in decisions] == ["partial, no newer good backup", "last #1"]
    newer_good = daily(0)
    decisions = select([older_good, partial, newer_good], Policy(mode=LAST, last=1), ZoneInfo("UTC"), NOW)
    assert [d.explain() for d in decisions] == [
        "last #1",
        "partial, a newer good backup exists",
        "older than the last 1",
    ]


def test_minimum_keep_overrides_a_short_rule():
    candidates = [daily(n) for n in range(40, 45)]
    decisions = select(candidates, Policy(mode=DAYS, days=7, minimum=3), ZoneInfo("UTC"), NOW)
    assert [d.explain() for d in decisions][:4] == [
        "newest good backup",
        "minimum keep",
        "minimum keep",
        "older than 7 days",
    ]
