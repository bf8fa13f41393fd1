"""Every main page at a phone's width (390 px) and a laptop's (1280 px), in the
light and the dark colour scheme: nothing may make the page wider than the
window (a wide table scrolls inside its card), the menu collapses behind a
"Menu" button on a phone and never covers the page's title, and the dark
scheme really is dark.

Screenshots of every page go to a temporary directory (or to
STRONGROOM_SCREENSHOTS when set), named page-width-scheme.png, to look at."""

import itertools
import os
import tempfile
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from catalog import audit, backup_runs
from catalog import verification as verifications
from catalog.alerts.models import Alert, Channel, Notification
from catalog.models import Backup, RestoreServer
from drills.models import Drill
from restore.models import RestoreJob
from restore.wizard import SESSION_KEY
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database
from tests.support import log_in, restore_now

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 900}}
SCHEMES = ("light", "dark")


@pytest.fixture
def world(pg_database, tmp_path, admin_user):
    """A source with a real backup, restore and verification, and one of each
    other thing a page lists, with long names where names can be long."""
    create_tricky_database(pg_database, big_rows=50)
    source = pg_source(pg_database, name="Inventory DB")
    destination = local_destination(tmp_path / "backups", name="Local disk")
    plan = make_plan(source, [destination], name="Nightly", verify_new_backups=False)
    backup = Backup.objects.get(pk=backup_runs.start_backup(admin_user, plan, label="pre-migration").pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    failed = Backup.objects.create(
        source=source,
        plan=plan,
        status=Backup.FAILED,
        format="custom",
        compression="zstd",
        error='pg_dump: error: connection to server at "db.internal.example.org" (10.0.0.12), port 5432 failed: '
        'FATAL: password authentication failed for user "inventory_backup_reader"',
    )
    restored = f"{pg_database['dbname']}_restored"
    restore = restore_now(backup, target=RestoreJob.NEW, database=restored)
    verification = verifications.run_here(
        verifications.create_verification(admin_user, backup, "checksum", enqueue_it=False)
    )
    Alert.objects.create(
        kind=Alert.SOURCE_HEALTH,
        key=f"source:{source.pk}",
        source=source,
        title="Inventory DB is failing",
        detail=failed.error[:300],
        url=source.get_absolute_url(),
    )
    channel = Channel.objects.create(
        name="On-call mail", kind=Channel.EMAIL, email_to="oncall@example.org", events=[Alert.SOURCE_HEALTH]
    )
    Notification.objects.create(
        channel=channel,
        event=Notification.TEST,
        status=Notification.FAILED,
        attempts=1,
        error="Could not reach the mail server localhost:25: [Errno 111] Connection refused",
    )
    Drill.objects.create(
        source=source,
        kind=Drill.FULL,
        how=Drill.MANUAL,
        status=Drill.PASSED,
        seconds=754,
        performed_at=timezone.now() - timedelta(days=3),
        notes="Restored onto the standby.",
    )
    RestoreServer.objects.create(
        name="Standby in the other rack",
        host="standby-02.db.internal.example.org",
        port=5432,
        user="strongroom_restore",
    )
    audit.record(admin_user, "layout.prepare", source)
    yield {
        "source": source,
        "destination": destination,
        "plan": plan,
        "backup": backup,
        "restore": restore,
        "verification": verification,
    }
    pg.drop_database(restored)


def main_pages(world):
    """(name, path) of the pages to look at; the wizard's steps need its session."""
    source, plan, backup = world["source"], world["plan"], world["backup"]
    return [
        ("dashboard", "/"),
        ("backups", "/backups/"),
        ("backup", backup.get_absolute_url()),
        ("sources", "/sources/"),
        ("source", source.get_absolute_url()),
        ("source-edit", f"/sources/{source.pk}/edit/"),
        ("destinations", "/destinations/"),
        ("destination", world["destination"].get_absolute_url()),
        ("plans", "/plans/"),
        ("plan", plan.get_absolute_url()),
        ("plan-edit", f"/plans/{plan.pk}/edit/"),
        ("restores", "/restores/"),
        ("restore", world["restore"].get_absolute_url()),
        ("wizard-what", "/restores/new/what/"),
        ("wizard-where", "/restores/new/where/"),
        ("wizard-scope", "/restores/new/scope/"),
        ("wizard-mode", "/restores/new/mode/"),
        ("wizard-review", "/restores/new/review/"),
        ("verifications", "/verifications/"),
        ("verification", world["verification"].get_absolute_url()),
        ("drills", "/drills/"),
        ("alerts", "/alerts/"),
        ("channels", "/channels/"),
        ("audit", "/audit/"),
        ("compliance", "/compliance/"),
        ("keys", "/keys/"),
        ("servers", "/servers/"),
        ("tokens", "/tokens/"),
    ]


def settled(page):
    """Waits for what htmx loads into the page when it opens (previews, pickers)."""
    page.wait_for_function(
        "() => document.readyState === 'complete'"
        " && !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )


def screenshot_dir():
    path = os.environ.get("STRONGROOM_SCREENSHOTS") or tempfile.mkdtemp(prefix="strongroom-layout-")
    os.makedirs(path, exist_ok=True)
    return path


def with_wizard_session(context, live_server, backup):
    """The restore wizard's choices so far, as if the steps before were taken:
    this backup, into the existing database (so the Mode step exists)."""
    session_key = next(c["value"] for c in context.cookies(live_server.url) if c["name"] == "sessionid")
    session = SessionStore(session_key=session_key)
    session[SESSION_KEY] = {
        "source": backup.source_id,
        "backup": backup.pk,
        "target": RestoreJob.EXISTING,
        "database": "",
        "tables": [],
        "mode": RestoreJob.PREVIEW,
    }
    session.save()


# What the page looks like to the checks below, measured in the browser at once.
MEASURE = """() => {
  const wide = [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1 && el.checkVisibility()
                  && !el.parentElement.closest('.table-scroll, .table, .log, pre'))
    .slice(0, 5).map(el => el.tagName.toLowerCase()
                           + (el.className ? '.' + String(el.className).replace(/ /g, '.') : ''));
  const [r, g, b] = getComputedStyle(document.documentElement).backgroundColor.match(/\\d+/g).map(Number);
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, wide,
    headerBottom: document.querySelector('header.topbar').getBoundingClientRect().bottom,
    titleTop: document.querySelector('main h1').getBoundingClientRect().top,
    luminance: (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255,
  };
}"""


def test_it_fits_every_main_page_at_phone_and_laptop_widths_in_both_schemes(live_server, browser, admin_user, world):
    shots = screenshot_dir()
    print(f"Screenshots: {shots}")
    context = browser.new_context(viewport=WIDTHS["laptop"])
    page = context.new_page()
    console_errors = []  # a CSP refusal, a script error, a missing stylesheet (the favicon may be missing)
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and not msg.text.startswith("Failed to load resource")
            and console_errors.append(msg.text)
        ),
    )
    page.on(
        "response",
        lambda r: r.status >= 400 and "favicon" not in r.url and console_errors.append(f"{r.status} {r.url}"),
    )
    log_in(page, live_server, admin_user)
    with_wizard_session(context, live_server, world["backup"])
    problems = []
    for name, path in main_pages(world):
        # Loaded once, then seen at each width in each scheme: the layout
        # follows the window and the colour scheme without a reload.
        response = page.goto(live_server.url + path)
        assert response.status == 200, f"{name} ({path}) answered {response.status}"
        assert page.url == live_server.url + path, f"{name} ({path}) went on to {page.url}"
        settled(page)
        for viewport, scheme in itertools.product(WIDTHS.values(), SCHEMES):
            width = viewport["width"]
            page.set_viewport_size(viewport)
            page.emulate_media(color_scheme=scheme)
            page.screenshot(path=f"{shots}/{name}-{width}-{scheme}.png", full_page=True)
            problems += layout_problems(page, f"{name} at {width} px ({scheme})", scheme)
    assert not console_errors, f"errors while loading the pages: {console_errors}"
    assert not problems, "\n".join(problems) + f"\nScreenshots: {shots}"
    context.close()


def layout_problems(page, where, scheme):
    seen = page.evaluate(MEASURE)
    problems = []
    if seen["scrollWidth"] > seen["innerWidth"]:
        problems.append(
            f"{where}: the page is {seen['scrollWidth']} px wide; wider than the window: {', '.join(seen['wide'])}"
        )
    if seen["titleTop"] < seen["headerBottom"]:
        problems.append(f"{where}: the menu covers the title")
    dark = seen["luminance"] < 0.3
    if dark != (scheme == "dark"):
        problems.append(f"{where}: the page's background is {'dark' if dark else 'light'}")
    return problems


def test_the_menu_collapses_on_a_phone_and_opens_with_its_button(live_server, browser, admin_user):
    context = browser.new_context(viewport=WIDTHS["phone"])
    page = context.new_page()
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/backups/")
    audit_link = page.locator("header.topbar nav a", has_text="Audit")
    assert audit_link.is_hidden()
    assert page.locator("header.topbar").bounding_box()["height"] <= 64  # one line: the brand and the button
    page.get_by_text("Menu", exact=True).click()
    assert audit_link.is_visible()
    assert page.locator("header.topbar button", has_text="Log out").is_visible()
    page.screenshot(path=f"{screenshot_dir()}/menu-open-390-light.png")
    audit_link.click()
    page.wait_for_url(f"{live_server.url}/audit/")
    context.close()

    # A superuser has the most links (Admin too): still one line on a laptop, with no button to press.
    root = User.objects.create_superuser("root", "root@example.org", "correct horse battery")
    context = browser.new_context(viewport=WIDTHS["laptop"])
    page = context.new_page()
    log_in(page, live_server, root)
    assert page.locator("header.topbar nav a", has_text="Audit").is_visible()
    assert page.locator("header.topbar a", has_text="Admin").is_visible()
    assert page.get_by_text("Menu", exact=True).is_hidden()
    assert page.locator("header.topbar").bounding_box()["height"] <= 64
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    context.close()
