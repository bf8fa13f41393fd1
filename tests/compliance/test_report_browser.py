"""The compliance report as an auditor sees it, in Chromium."""

import os

import pytest

from tests.compliance.history import build_history
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def test_an_auditor_reads_the_report_and_downloads_the_pdf(
    live_server, page, auditor_user, admin_user, tmp_path, s3_bucket
):
    history = build_history(tmp_path, s3_bucket, admin_user)
    log_in(page, live_server, auditor_user)
    page.click("nav >> text=Compliance")
    page.fill("#id_start", "2026-10-01")
    page.fill("#id_end", "2026-10-31")
    page.check(f"#report-filters input[value='{history['inventory'].pk}']")
    page.click("button:has-text('Show report')")
    page.get_by_text("Inventory DB (target 24 h): 1 breach, 36 h in all.").wait_for()
    assert page.locator("nav a.current").inner_text() == "Compliance"
    assert page.get_by_text("Billing DB").count() == 1  # only as a choice in the form
    # The menu stays on one line at 1280 px.
    tops = {round(link.bounding_box()["y"]) for link in page.locator("nav a").all()}
    assert len(tops) == 1, "the menu wrapped onto a second line"
    page.click("text=Every day")
    assert page.locator("#section-daily tr.overdue").inner_text().split("\t")[:2] == ["Inventory DB", "2026-10-10"]
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/compliance-report.png", full_page=True)
    with page.expect_download() as download:
        page.click("text=Download PDF")
    assert download.value.suggested_filename == "strongroom-compliance-2026-10.pdf"


def test_a_bad_period_is_explained_on_the_page(live_server, page, auditor_user):
    log_in(page, live_server, auditor_user)
    page.goto(f"{live_server.url}/compliance/?start=2026-10-31&end=2026-10-01")
    page.get_by_text("To: The period must end on or after the day it starts.").wait_for()
    assert page.locator("text=Download PDF").count() == 0
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/compliance-bad-period.png")
