"""The Audit trail page in Chromium, as an auditor reads it."""

import os

import pytest
from playwright.sync_api import expect

from catalog import audit
from tests.catalog.audit.helpers import event_at, tampering
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_an_auditor_filters_verifies_and_finds_the_broken_link(live_server, page, auditor_user, admin_user):
    event_at("2026-03-01T09:00:00", admin_user, "source.create", admin_user, {"name": "Inventory"}, "198.51.100.1")
    event_at("2026-03-01T23:00:00", "scheduler", "backup.start", changes={"plan": "Nightly"})
    edited = event_at("2026-03-02T10:30:00", admin_user, "source.update", admin_user, {"port": 5433}, "198.51.100.2")
    event_at("2026-03-03T01:00:00", "retention", "backup.prune", changes={"kept": 30})
    log_in(page, live_server, auditor_user)

    page.goto(f"{live_server.url}/audit/")
    # The four, and the auditor's own sign-in (auth.sign_in).
    page.get_by_text("5 events.").wait_for()
    page.click("text=Verify the chain")
    page.locator("#verify-result").get_by_text("5 events, chain intact").wait_for()
    shot(page, "audit-intact")

    page.select_option("#id_actor", "scheduler")  # htmx swaps the results in place
    page.locator("#audit-results").get_by_text("1 event matches these filters").wait_for()
    assert page.locator("#audit-results tbody tr").count() == 1
    assert "actor=scheduler" in page.url
    assert "actor=scheduler" in page.get_attribute("a:has-text('JSON Lines')", "href")
    shot(page, "audit-filtered")
    page.select_option("#id_actor", "")
    page.select_option("#id_action", "source.update")
    page.wait_for_url("**action=source.update**")
    expect(page.locator("#audit-results tbody tr")).to_have_count(1)
    assert page.locator(f"#event-{edited.pk}").is_visible()

    with tampering() as cursor:
        cursor.execute("UPDATE catalog_auditevent SET changes = '{\"port\": 5432}' WHERE id = %s", [edited.pk])
    page.click("text=Verify the chain")
    result = page.locator("#verify-result")
    result.get_by_text("does not match its hash: edited").wait_for()
    shot(page, "audit-broken")
    result.get_by_role("link", name=f"event #{edited.pk}").click()
    page.get_by_text(f"Audit event #{edited.pk}").wait_for()
    assert page.get_by_text("does not match its hash: edited").is_visible()
    shot(page, "audit-event")
    assert not audit.verify_chain().intact
