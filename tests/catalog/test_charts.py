"""The plan page's trend charts: server-rendered SVG, so a trend or an outlier is seen."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from catalog import charts
from catalog.models import Backup, Source
from tests.factories import local_destination, make_plan

MB = 2**20
START = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def points(values, outliers=()):
    return [
        charts.Point(START + timedelta(days=i), value, f"#{i + 1}", f"/backups/{i + 1}/", i in outliers)
        for i, value in enumerate(values)
    ]


def circles(svg, series):
    group = re.search(rf'<g class="chart-series chart-series-{series}">(.*?)</g>', svg, re.S).group(1)
    return group.count("<circle")


def test_it_draws_one_dot_per_point_with_a_tooltip_and_a_link():
    svg = charts.time_chart(
        [charts.Series("stored", points([100 * MB, 120 * MB, 90 * MB]))], charts.size_unit, label="Stored size"
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert circles(svg, "stored") == 3
    assert "<title>#2</title>" in svg and 'href="/backups/3/"' in svg
    assert svg.count("<polyline") == 1


def test_it_labels_the_axes_in_round_units_and_dates():
    svg = charts.time_chart(
        [charts.Series("stored", points([100 * MB, 120 * MB, 90 * MB, 300 * MB, 110 * MB]))], charts.size_unit
    )
    labels = re.findall(r'<text class="chart-label"[^>]*>([^<]*)</text>', svg)
    assert labels[:4] == ["0 MB", "100 MB", "200 MB", "300 MB"]
    assert "1 Nov" in labels and "5 Nov" in labels


def test_it_labels_durations_in_seconds_minutes_or_hours():
    quick = charts.time_chart([charts.Series("duration", points([20, 45, 30]))], charts.duration_unit)
    slow = charts.time_chart([charts.Series("duration", points([240, 600, 300]))], charts.duration_unit)
    long = charts.time_chart([charts.Series("duration", points([3 * 3600, 5 * 3600]))], charts.duration_unit)
    assert ">40 s<" in quick and ">10 min<" in slow and ">6 h<" in long


def test_it_rings_an_outlier_and_crosses_a_failure():
    marks = [charts.Mark(START + timedelta(days=1, hours=1), "#9 · failed", "/backups/9/")]
    svg = charts.time_chart(
        [charts.Series("stored", points([100 * MB, 100 * MB, 400 * MB], outliers={2}))], charts.size_unit, marks
    )
    assert svg.count('class="point outlier"') == 1
    assert svg.count('class="mark-failed"') == 1 and "#9 · failed" in svg


def test_it_says_no_backups_yet_instead_of_an_empty_chart():
    html = charts.time_chart([charts.Series("stored", [])], charts.size_unit)
    assert "<svg" not in html and "No backups yet." in html


def test_it_draws_a_single_point_in_the_middle():
    svg = charts.time_chart([charts.Series("stored", points([5 * MB]))], charts.size_unit)
    assert circles(svg, "stored") == 1
    middle = charts.LEFT + (charts.WIDTH - charts.LEFT - charts.RIGHT) / 2
    assert f'cx="{middle}"' in svg
    assert ">0 MB<" in svg and ">6 MB<" in svg  # an axis from zero, not a division by zero


def test_it_draws_zero_sized_values_without_failing():
    svg = charts.time_chart([charts.Series("stored", points([0, 0]))], charts.size_unit)
    assert circles(svg, "stored") == 2


def test_it_escapes_every_text():
    hostile = "<script>alert(1)</script>"
    marks = [charts.Mark(START, hostile)]
    svg = charts.time_chart(
        [charts.Series("stored", [charts.Point(START, MB, hostile, '/x/"onclick="')])],
        charts.size_unit,
        marks,
        label=hostile,
    )
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert '"onclick="' not in svg


def test_it_judges_an_outlier_against_the_median_of_the_previous_ones():
    assert charts.is_outlier(160, [100, 100, 100, 100], 50)
    assert charts.is_outlier(40, [100, 100, 100, 100], 50)
    assert not charts.is_outlier(140, [100, 100, 100, 100], 50)
    assert not charts.is_outlier(1000, [100, 100], 50)  # too few to judge
    assert not charts.is_outlier(1000, [100, 100, 100, 100], 0)  # the plan turned size alerts off


@pytest.fixture
def plan(db, tmp_path):
    source = Source.objects.create(name="Shop", slug="shop", engine="sqlite", sqlite_path=str(tmp_path / "shop.db"))
    return make_plan(source, [local_destination(tmp_path / "disk")], name="Shop nightly", format="sqlite")


def record(plan, day, stored, status=Backup.SUCCEEDED, seconds=240, error=""):
    at = START + timedelta(days=day)
    return Backup.objects.create(
        source=plan.source,
        plan=plan,
        format="sqlite",
        compression="zstd",
        status=status,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(seconds=seconds),
        stored_bytes=stored,
        raw_bytes=stored * 3,
        error=error,
    )


def test_it_charts_a_plans_backups_and_marks_the_outlier(plan, admin_client):
    for day in range(10):
        record(plan, day, (100 + day) * MB)
    odd = record(plan, 10, 400 * MB)
    record(plan, 11, 111 * MB)
    failed = record(plan, 12, 0, status=Backup.FAILED, error="disk <full>")
    record(plan, 13, 112 * MB, status=Backup.PARTIAL)

    page = admin_client.get(plan.get_absolute_url()).content.decode()
    size, duration = re.findall(r"<svg.*?</svg>", page, re.S)
    assert circles(size, "stored") == 13 and circles(size, "raw") == 13 and circles(duration, "duration") == 13
    assert size.count('class="point outlier"') == 2  # its stored and its raw size, judged by the raw one
    assert f'href="/backups/{odd.pk}/"><circle class="point outlier"' in size
    assert "raw size outside ±50 % of the median of the previous 7 (318.0 MB)" in size
    assert f"#{odd.pk} · 11 Nov 03:00 · 400.0 MB (raw 1.2 GB) · 4 min 00 s" in size
    assert f"#{failed.pk} · 13 Nov 03:00 · failed: disk &lt;full&gt;" in size
    assert "last 13 backups with data" in page and "1 unusual size" in page and "1 failed" in page


def test_it_shows_the_last_sixty_backups(plan, admin_client):
    for day in range(70):
        record(plan, day, 100 * MB)
    page = admin_client.get(plan.get_absolute_url()).content.decode()
    size = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    assert circles(size, "stored") == 60 and "last 60 backups with data" in page


def test_a_plan_without_backups_says_so(plan, auditor_client):
    page = auditor_client.get(plan.get_absolute_url()).content.decode()
    assert "<svg" not in page and page.count("No backups yet.") >= 2


def test_the_plan_page_reads_a_fixed_number_of_rows_for_its_charts(plan, admin_client, django_assert_max_num_queries):
    record(plan, 0, MB)
    admin_client.get(plan.get_absolute_url())  # warm the session and the site's caches
    with django_assert_max_num_queries(40) as few:
        admin_client.get(plan.get_absolute_url())
    for day in range(1, 60):
        record(plan, day, MB, status=Backup.FAILED if day % 5 == 0 else Backup.SUCCEEDED)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client.get(plan.get_absolute_url())


def change(at, old, new):
    from catalog.alerts.models import StatusChange

    return StatusChange(created_at=at, old_status=old, new_status=new)


def test_it_cuts_a_sources_week_into_stretches_of_one_status():
    end = START + timedelta(days=7)
    changes = [
        change(START + timedelta(days=2), "up", "late"),
        change(START + timedelta(days=2, hours=2), "late", "down"),
        change(START + timedelta(days=3), "down", "up"),
    ]
    segments = charts.health_segments(changes, "up", START, end)
    assert [(s.status, s.end - s.start) for s in segments] == [
        ("up", timedelta(days=2)),
        ("late", timedelta(hours=2)),
        ("down", timedelta(hours=22)),
        ("up", timedelta(days=4)),
    ]
    assert [s.status for s in charts.health_segments([], "paused", START, end)] == ["paused"]

    svg = charts.health_strip(segments, {"down": "Down"})
    assert svg.count("<rect") == 4 and 'class="strip-down"' in svg
    assert "<title>Down from 3 Nov 05:00 to 4 Nov 03:00 (22 h)</title>" in svg

    # A source two days old fills the last two sevenths of a week's strip.
    young = charts.health_segments([], "up", end - timedelta(days=2), end)
    svg = charts.health_strip(young, frame=(START, end))
    assert f'x="{charts.STRIP_WIDTH * 5 / 7:.1f}"' in svg
