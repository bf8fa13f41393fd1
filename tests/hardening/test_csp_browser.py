"""The pages under the Content Security Policy in Chromium: no violation on
the console on the main pages, their htmx fragments and the Django admin, and
every confirm dialog (now a data-confirm attribute handled by
static/js/strongroom.js) still asks, and cancelling it changes nothing."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from catalog.api.models import ApiToken
from catalog.models import Backup, Copy, Key, Source
from pitr.models import ContinuousProtection
from tests.hardening.test_security_headers import confirm_world, world  # noqa: F401 — fixtures
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def violations(page):
    """Console messages about the policy, and uncaught errors, as they come."""
    seen = []
    page.on("console", lambda message: "Content Security Policy" in message.text and seen.append(message.text))
    page.on("pageerror", lambda error: seen.append(f"uncaught: {error}"))
    return seen


@pytest.fixture
def root(confirm_world):
    return User.objects.create_superuser("root", "root@example.org", "correct horse battery")


@pytest.fixture
def prunable(confirm_world):
    """Two older good backups that the plan's rule (keep the last 1) would prune."""
    w = confirm_world
    w["plan"].retention_mode, w["plan"].keep_last = "last", 1
    w["plan"].save()
    for days in (3, 2):
        old = Backup.objects.create(
            source=w["source"],
            plan=w["plan"],
            format="sqlite",
            compression="zstd",
            trigger="schedule",  # the plan's rule judges scheduled backups; manual ones wait
            status=Backup.SUCCEEDED,
            created_at=timezone.now() - timedelta(days=days),
            finished_at=timezone.now() - timedelta(days=days),
        )
        Copy.objects.create(backup=old, destination=w["destination"], status=Copy.DURABLE, key=f"walk/old-{days}")
    return w


def postgres_source(source):
    """The protection panel is shown for PostgreSQL sources only."""
    Source.objects.filter(pk=source.pk).update(engine="postgresql", host="127.0.0.1", port=1, dbname="walk")


def settle(page):
    """Loaded, and the requests htmx made on load answered (violations show by then)."""
    page.wait_for_load_state("load")
    page.wait_for_function("!document.querySelector('.htmx-request')", timeout=10_000)


def test_the_main_pages_and_the_admin_run_without_a_policy_violation(live_server, page, violations, root, prunable):
    w = prunable
    postgres_source(w["source"])
    log_in(page, live_server, root)
    for path in [
        "/",
        f"/backups/{w['backup'].pk}/",
        f"/plans/{w['plan'].pk}/",
        "/tokens/",
        "/keys/",
        "/audit/",
        "/admin/",
        "/admin/catalog/source/",
        f"/admin/catalog/source/{w['source'].pk}/change/",
        f"/admin/auth/user/{root.pk}/change/",
    ]:
        page.goto(f"{live_server.url}{path}")
        settle(page)
        assert page.locator("body").inner_text().strip(), path
    # Pages whose parts htmx loads (GET and POST), as they appear.
    page.goto(f"{live_server.url}/plans/{w['plan'].pk}/edit/")
    page.locator("#retention-preview").get_by_text("pruned").first.wait_for()
    page.locator("#cron-preview").locator("*").first.wait_for()
    page.goto(f"{live_server.url}/sources/{w['source'].pk}/")
    page.locator("#protection-panel").get_by_text("Archive mode").wait_for()
    page.goto(f"{live_server.url}/destinations/{w['destination'].pk}/")
    page.click("text=Scan for orphans")
    page.get_by_text("left-behind.dump.partial").wait_for()
    assert not violations, "\n".join(violations)

    # The detector works: an injected inline handler is refused, and reported.
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend', '<img src=\"/static/none.png\" onerror=\"window.ran = 1\">')"
    )
    page.wait_for_timeout(300)
    assert page.evaluate("window.ran") is None
    assert any("Content Security Policy" in v for v in violations)


def answer_dialogs(page, accept):
    asked = []

    def handle(dialog):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", handle)
    return asked


@pytest.fixture
def posts(page):
    """The forms the browser submitted (method POST), as they go."""
    sent = []
    page.on("request", lambda request: request.method == "POST" and sent.append(request.url))
    return sent


def cancel(page, posts, selector):
    """Clicks, answers the confirm with Cancel: returns the question; nothing may have been posted."""
    asked = answer_dialogs(page, accept=False)
    page.click(selector)
    settle(page)
    assert posts == [], f"{selector} posted {posts} after Cancel"
    assert len(asked) == 1, f"{selector} asked nothing"
    return asked[0]


def test_confirm_dialogs_ask_and_cancelling_submits_nothing(live_server, page, violations, posts, root, prunable):
    w = prunable
    log_in(page, live_server, root)
    posts.clear()  # the login

    # Revoke a token (a data-confirm button): Cancel keeps it, OK revokes it.
    page.goto(f"{live_server.url}/tokens/")
    assert (
        cancel(page, posts, "form.token-revoke button") == "Revoke Walk CI? Requests with it will be refused at once."
    )
    assert ApiToken.objects.get(pk=w["token"].pk).revoked_at is None
    asked = answer_dialogs(page, accept=True)
    page.click("form.token-revoke button")
    settle(page)
    assert asked and posts == [f"{live_server.url}/tokens/{w['token'].pk}/revoke/"]
    assert ApiToken.objects.get(pk=w["token"].pk).revoked_at is not None
    posts.clear()

    # Destroy a retired key (a data-confirm button in a form that also needs the key id typed).
    page.goto(f"{live_server.url}/keys/")
    page.fill("form.key-destroy input[name=confirm_key_id]", "mk-walk-retired")
    assert (
        cancel(page, posts, "form.key-destroy button") == "Destroy mk-walk-retired? Its key file is deleted for good."
    )
    assert Key.objects.get(key_id="mk-walk-retired").destroyed_at is None

    # Release a pinned backup (a data-confirm form).
    page.goto(f"{live_server.url}/backups/{w['backup'].pk}/")
    assert cancel(page, posts, "text=Unpin") == "Release this backup? Its plan’s retention rule will apply to it again."
    assert Backup.objects.get(pk=w["backup"].pk).pinned

    # Apply retention now.
    page.goto(f"{live_server.url}/plans/{w['plan'].pk}/")
    assert "marked prune from every destination" in cancel(page, posts, "text=Apply retention now")
    assert not Backup.objects.filter(plan=w["plan"], pruned_at__isnull=False).exists()

    # Turn continuous protection off.
    postgres_source(w["source"])
    page.goto(f"{live_server.url}/sources/{w['source'].pk}/")
    question = cancel(page, posts, "text=Disable continuous protection")
    assert question == "Turn continuous protection off and drop the replication slot?"
    assert ContinuousProtection.objects.get(source=w["source"]).enabled

    # Remove orphans from a scan (the form arrives by htmx): Cancel keeps the file, OK removes it.
    orphan = Path(w["destination"].path) / "walk" / "left-behind.dump.partial"
    page.goto(f"{live_server.url}/destinations/{w['destination'].pk}/")
    page.click("text=Scan for orphans")
    page.get_by_text("left-behind.dump.partial").wait_for()
    posts.clear()  # the scan
    assert cancel(page, posts, "#orphans form button[type=submit]").startswith(
        "Remove the selected items from Walk disk?"
    )
    assert orphan.exists()
    asked = answer_dialogs(page, accept=True)
    page.click("#orphans form button[type=submit]")
    settle(page)
    assert asked and not orphan.exists()

    assert not violations, "\n".join(violations)
