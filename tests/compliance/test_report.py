"""The compliance report's figures for a known October (see history.py), and
the same figures in the page, the CSV and the PDF."""

import csv
import io
from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pypdf import PdfReader

from catalog.models import AuditEvent, Verification
from compliance import report
from tests.compliance.history import at, build_history, good_backup

OCTOBER = {"start": "2026-10-01", "end": "2026-10-31"}


@pytest.fixture
def history(db, tmp_path, s3_bucket, admin_user):
    return build_history(tmp_path, s3_bucket, admin_user)


@pytest.fixture
def october(history):
    return report.build(date(2026, 10, 1), date(2026, 10, 31))


def rows(section, source=None):
    return [row for row in section.rows if source is None or source in row]


def test_it_counts_backups_per_day_against_the_plans(october):
    daily = october.section("daily")
    assert len(rows(daily, "Inventory DB")) == 31 and len(rows(daily, "Billing DB")) == 31
    short = [row for row, flagged in daily.table() if flagged]
    assert short == [["Inventory DB", "2026-10-10", 0, 1, "short"]]
    # The late backup of the 11th still counts for its day.
    assert ["Inventory DB", "2026-10-11", 1, 1, ""] in daily.rows
    # Billing's plan was created on 15 October at 12:30: nothing expected before its first run.
    assert ["Billing DB", "2026-10-15", 0, 0, ""] in daily.rows
    assert ["Billing DB", "2026-10-16", 2, 2, ""] in daily.rows
    assert daily.summary == [
        "Billing DB: 31 of 31 days met the plan (32 good backups, 32 runs expected).",
        "Inventory DB: 30 of 31 days met the plan (30 good backups, 31 runs expected); short on 2026-10-10.",
    ]


def test_it_finds_the_rpo_breach_with_its_duration(october):
    rpo = october.section("rpo")
    assert rpo.rows == [["Inventory DB", "24 h", "2026-10-10 03:00 UTC", "2026-10-11 15:00 UTC", "36 h", 2160]]
    # No RPO set for Billing DB: its 12-hourly plan and 2 h grace make the target.
    assert rpo.summary == ["Billing DB (target 14 h): no breach.", "Inventory DB (target 24 h): 1 breach, 36 h in all."]


def test_it_reports_a_breach_still_open_as_ongoing(history):
    now = at(4, 12, month=11)  # Inventory's last backup was on 31 October at 03:00
    november = report.build(date(2026, 11, 1), date(2026, 11, 30), [history["inventory"]], now=now)
    assert november.section("rpo").rows == [
        ["Inventory DB", "24 h", "2026-11-01 03:00 UTC", "ongoing", "81 h", 81 * 60]
    ]
    daily = november.section("daily")
    assert [row[1] for row in daily.rows] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]  # not beyond now
    assert all(row[4] == "short" for row in daily.rows)


def test_it_measures_verification_coverage_and_the_latest_test_restore(october):
    coverage = october.section("coverage")
    assert coverage.rows == [
        ["Billing DB", 32, 0, "0.0 %", "none", "", ""],
        # The failed test restore of 2 November is after the period.
        ["Inventory DB", 30, 24, "80.0 %", "2026-10-20 04:13 UTC", "Passed", "12 min"],
    ]
    assert coverage.summary == ["24 of 62 good backups checksum-verified (38.7 %)."]


def test_it_judges_drills_and_restores_against_the_rto(october):
    restores = october.section("restores")
    assert [(row[0], row[2], row[4], row[6]) for row in restores.rows] == [
        ("2026-10-05 09:00 UTC", "Full restore drill (recorded by hand)", "41 min", "within"),
        ("2026-10-12 09:00 UTC", "Partial restore test (run by Strongroom)", "5 h", "over"),
        ("2026-10-21 09:00 UTC", "Checksum verification (run by Strongroom)", "—", "failed"),
        ("2026-10-22 10:00 UTC", restores.rows[3][2], "1 h 30 min", "within"),
        ("2026-10-23 08:00 UTC", restores.rows[4][2], "30 min", "unknown"),  # Billing DB has no RTO
    ]
    assert restores.rows[3][2].startswith("Restore #") and restores.rows[4][1] == "Billing DB"
    assert restores.summary == ["5 drills and restores: 2 within, 1 over, 1 unknown, 1 failed."]


def test_it_shows_three_two_one_now(october):
    rule = october.section("three_two_one")
    assert [row[:4] for row in rule.rows] == [
        ["Billing DB", "SQLite", "Billing twice daily", "not met"],
        ["Inventory DB", "PostgreSQL", "Inventory nightly", "met"],
    ]
    assert "an off-site copy" in rule.rows[0][4]
    assert (
        rule.columns[5] == "Copies at"
        and rule.rows[1][5].startswith("S3-compatible storage at ")
        and rule.rows[1][5].endswith("; local disks")
    )


def test_it_lists_retention_actions_and_pins(october, history):
    retention = october.section("retention")
    assert [(row[0], row[1], row[4]) for row in retention.rows] == [
        ("2026-10-03 04:00 UTC", "pruned", "not kept by the rule (daily beyond 30, 2026-08-02)"),
        ("2026-10-03 04:00 UTC", "pruned", "not kept by the rule (daily beyond 30, 2026-08-01)"),
        ("2026-10-14 09:00 UTC", "pinned by alice", "before the schema migration"),
    ]
    assert retention.rows[2][2] == f"#{history['pinned'].pk}" and retention.rows[2][3] == "Inventory DB"


def test_it_lists_key_rotations_and_key_events(october):
    keys = october.section("keys")
    assert [row[:3] for row in keys.rows] == [
        ["2026-10-18 10:00 UTC", keys.rows[0][1], "mk-2026"],
        ["2026-10-18 10:00 UTC", "key created (imported)", "mk-2026"],
        ["2026-10-18 10:00 UTC", "key retired", "mk-2025"],
        ["2026-10-25 12:00 UTC", "key destroyed", "mk-2024"],
    ]
    assert keys.rows[0][1].startswith("rotation #")
    assert keys.rows[0][3] == "Succeeded: 62 of 62 backups re-wrapped, replacing mk-2025, requested by alice"


def test_it_limits_the_report_to_the_chosen_sources(history):
    billing_only = report.build(date(2026, 10, 1), date(2026, 10, 31), [history["billing"]])
    assert {row[0] for row in billing_only.section("daily").rows} == {"Billing DB"}
    assert billing_only.section("restores").summary == ["1 drill or restore: 0 within, 0 over, 1 unknown, 0 failed."]
    assert billing_only.section("retention").rows == []


def test_its_queries_do_not_grow_with_the_backups(history):
    def count():
        with CaptureQueriesContext(connection) as queries:
            report.build(date(2026, 10, 1), date(2026, 10, 31))
        return len(queries)

    before = count()
    for day in range(1, 31):
        backup = good_backup(history["inventory"], history["nightly"], at(day, 20))
        Verification.objects.create(backup=backup, source=history["inventory"], kind="checksum", status="passed")
    assert count() == before


def test_it_defaults_to_the_last_full_calendar_month():
    assert report.last_full_month(date(2026, 11, 26)) == (date(2026, 10, 1), date(2026, 10, 31))
    assert report.last_full_month(date(2027, 1, 1)) == (date(2026, 12, 1), date(2026, 12, 31))


# --- the page and the downloads


def test_auditors_read_the_page(auditor_client, history):
    response = auditor_client.get("/compliance/", OCTOBER)
    assert response.status_code == 200
    page = response.content.decode()
    for figure in (
        "2026-10-01 to 2026-10-31",
        "short on 2026-10-10",
        "2026-10-11 15:00 UTC",
        "80.0 %",
        "Partial restore test (run by Strongroom)",
        "mk-2024",
        "What an auditor asks",
    ):
        assert figure in page, figure


def test_the_page_covers_last_month_by_default(auditor_client, history):
    response = auditor_client.get("/compliance/")
    first, last = report.last_full_month(timezone.localdate())
    assert f"{first:%Y-%m-%d} to {last:%Y-%m-%d}" in response.content.decode()


def test_it_explains_a_bad_period(auditor_client, history):
    response = auditor_client.get("/compliance/", {"start": "2026-10-31", "end": "2026-10-01"})
    assert "The period must end on or after the day it starts." in response.content.decode()
    assert response.context["report"] is None
    download = auditor_client.get("/compliance/report.csv", {"start": "2026-10-31", "end": "2026-10-01"})
    assert download.status_code == 302 and download["Location"].startswith("/compliance/?")
    assert not AuditEvent.objects.filter(action="report.export").exists()


def test_auditors_download_the_csv(auditor_client, auditor_user, history):
    response = auditor_client.get("/compliance/report.csv", OCTOBER)
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="strongroom-compliance-2026-10.csv"'
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert ["Report", "Period", "2026-10-01 to 2026-10-31"] in table
    assert [
        "RPO breaches",
        "Inventory DB",
        "24 h",
        "2026-10-10 03:00 UTC",
        "2026-10-11 15:00 UTC",
        "36 h",
        "2160",
    ] in table
    assert ["Backups taken per day against plan", "Inventory DB", "2026-10-10", "0", "1", "short"] in table
    assert [
        "Verification coverage",
        "Inventory DB",
        "30",
        "24",
        "80.0 %",
        "2026-10-20 04:13 UTC",
        "Passed",
        "12 min",
    ] in table
    # Each section opens with its column names.
    assert ["RPO breaches", "Source", "Target", "Breach started", "Breach ended", "Duration", "Minutes"] in table
    event = AuditEvent.objects.get(action="report.export")
    assert event.actor == auditor_user
    assert event.changes == {
        "format": "csv",
        "period": "2026-10-01 to 2026-10-31",
        "sources": ["Billing DB", "Inventory DB"],
    }


def test_auditors_download_the_pdf(auditor_client, history):
    response = auditor_client.get("/compliance/report.pdf", {**OCTOBER, "sources": [history["inventory"].pk]})
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="strongroom-compliance-2026-10.pdf"'
    text = " ".join("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages).split())
    for figure in (
        "Strongroom compliance report",
        "Period: 2026-10-01 to 2026-10-31",
        "Sources: Inventory DB",
        "short on 2026-10-10",
        "2026-10-10 03:00 UTC",
        "36 h",
        "80.0 %",
        "1 breach, 36 h in all",
        "2 within, 1 over, 0 unknown, 1 failed",
        "mk-2026",
        "3-2-1 status now",
    ):
        assert figure in text, figure
    assert "Billing DB" not in text
    assert AuditEvent.objects.get(action="report.export").changes["format"] == "pdf"


def test_a_period_that_is_not_a_month_names_both_days(auditor_client, history):
    response = auditor_client.get("/compliance/report.csv", {"start": "2026-10-05", "end": "2026-10-12"})
    assert response["Content-Disposition"] == 'attachment; filename="strongroom-compliance-2026-10-05_2026-10-12.csv"'


def test_anonymous_visitors_are_sent_to_log_in(client, db):
    for url in ("/compliance/", "/compliance/report.csv", "/compliance/report.pdf"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_auditors_cannot_post(auditor_client, db):
    for url in ("/compliance/", "/compliance/report.csv", "/compliance/report.pdf"):
        assert auditor_client.post(url).status_code == 403, url
