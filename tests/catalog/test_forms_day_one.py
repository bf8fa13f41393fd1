"""The forms a new administrator meets in the first hour: a plan offers only
the formats its source can produce, errors are said in words (never as
internal codes such as "custom" or "sqlite"), a successful Test connection
clears the errors of an earlier attempt, and the label of "Back up now" is
checked by the browser without a console error and kept when refused."""

import re

import pytest
from django.urls import reverse

from catalog import backup_runs, services
from catalog.models import AuditEvent, BackupPlan, Destination, Source
from tests.support import log_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def pg_and_sqlite(tmp_path):
    pg = services.save_source(
        "test", Source(name="Shop DB", engine="postgresql", host="127.0.0.1", dbname="shop", user="postgres")
    )
    lite = services.save_source(
        "test", Source(name="Notes file", engine="sqlite", sqlite_path=str(tmp_path / "notes.sqlite3"))
    )
    disk = services.save_destination("test", Destination(name="Local disk", kind="local", path=str(tmp_path / "b")))
    return pg, lite, disk


def format_options(html):
    select = re.search(r'<select name="format".*?</select>', html, re.S).group(0)
    return dict(re.findall(r'<option value="([^"]+)"([^>]*)>', select))


def offered(html):
    """The formats shown to someone without the script: not hidden, not disabled."""
    return {value for value, attrs in format_options(html).items() if "hidden" not in attrs and "disabled" not in attrs}


def test_a_postgresql_sources_plan_is_not_offered_sqlite_files(admin_client, pg_and_sqlite):
    pg, lite, disk = pg_and_sqlite
    new_for_pg = admin_client.get(reverse("plan_new") + f"?source={pg.pk}").content.decode()
    assert "sqlite" not in offered(new_for_pg)
    assert {"custom", "plain", "jsonl"} <= offered(new_for_pg)

    plan = services.save_plan("test", BackupPlan(name="Nightly", source=pg, format="custom"), destinations=[disk])
    edit = admin_client.get(reverse("plan_edit", args=[plan.pk])).content.decode()
    assert "sqlite" not in offered(edit)

    new_for_sqlite = admin_client.get(reverse("plan_new") + f"?source={lite.pk}").content.decode()
    assert offered(new_for_sqlite) >= {"sqlite", "jsonl"}
    assert not offered(new_for_sqlite) & {"custom", "plain", "basebackup"}


def test_with_no_sqlite_source_no_sqlite_format_exists_at_all(admin_client, tmp_path):
    services.save_source(
        "test", Source(name="Shop DB", engine="postgresql", host="127.0.0.1", dbname="shop", user="postgres")
    )
    page = admin_client.get(reverse("plan_new")).content.decode()
    assert "sqlite" not in format_options(page)


def test_each_format_says_which_engines_produce_it_for_the_script(admin_client, pg_and_sqlite):
    page = admin_client.get(reverse("plan_new")).content.decode()
    options = format_options(page)
    assert 'data-engines="sqlite"' in options["sqlite"]
    assert 'data-engines="postgresql"' in options["custom"]
    assert 'data-engines="postgresql sqlite"' in options["jsonl"]
    pg, lite, _ = pg_and_sqlite
    assert re.search(rf'<option value="{pg.pk}"[^>]*data-engine="postgresql"', page)
    assert re.search(rf'<option value="{lite.pk}"[^>]*data-engine="sqlite"', page)


@pytest.mark.django_db(transaction=True)
def test_choosing_another_source_offers_its_formats(live_server, page, admin_user, pg_and_sqlite):
    pg, lite, _ = pg_and_sqlite
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/plans/new/?source={lite.pk}")
    visible = "select => [...select.options].filter(o => !o.hidden && !o.disabled).map(o => o.value)"
    assert page.eval_on_selector("#id_format", "select => select.value") == "sqlite"
    assert "custom" not in page.eval_on_selector("#id_format", visible)

    page.select_option("#id_source", str(pg.pk))

    assert page.eval_on_selector("#id_format", visible) == [
        "custom",
        "directory",
        "plain",
        "jsonl",
        "csv",
        "sql",
        "basebackup",
    ]
    assert page.eval_on_selector("#id_format", "select => select.value") == "custom"  # sqlite gave way
    page.select_option("#id_source", str(lite.pk))
    assert page.eval_on_selector("#id_format", visible) == ["sqlite", "jsonl", "csv", "sql"]


def test_a_format_the_source_cannot_produce_is_refused_in_words(admin_client, pg_and_sqlite):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, format="sqlite")
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors["format"])
    assert "A PostgreSQL source cannot produce “SQLite database file”" in errors
    # Each label quoted: the directory format's has a comma of its own.
    assert (
        "“PostgreSQL custom (pg_dump -Fc)”, “PostgreSQL directory with parallel jobs (pg_dump -Fd -j)”, "
        "“Plain SQL”, “Export: JSON Lines”" in errors
    )
    assert not re.search(r"\b(sqlite|postgresql|jsonl|basebackup)\b|custom, (directory|plain)", errors)
    assert not BackupPlan.objects.exists()


def test_running_a_plan_whose_format_no_longer_fits_says_so_in_words(pg_and_sqlite):
    pg, _, disk = pg_and_sqlite
    plan = BackupPlan.objects.create(name="Odd", source=pg, format="sqlite")
    plan.destinations.set([disk])
    with pytest.raises(services.Refused) as refused:
        backup_runs.check_runnable(plan)
    assert "SQLite database file" in str(refused.value) and "PostgreSQL source" in str(refused.value)
    assert "postgresql" not in str(refused.value) and "format sqlite" not in str(refused.value)


def test_test_connection_on_an_incomplete_form_names_the_fields(admin_client):
    response = admin_client.post(reverse("source_test"), {"name": "Shop DB", "engine": "postgresql", "port": 5432})
    page = response.content.decode()
    assert "Host" in page and "Database" in page and "User" in page
    assert "highlighted" not in page  # nothing is highlighted: this answer is all there is


@pytest.mark.django_db(transaction=True)
def test_a_successful_test_connection_clears_the_errors_of_the_failed_save(live_server, page, admin_user, pg_server):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/sources/new/")
    page.fill("#id_name", "Shop DB")
    page.click("button:has-text('Save source')")
    assert page.locator(".field .error").count() == 3  # host, database and user
    page.fill("#id_host", pg_server["host"])
    page.fill("#id_port", str(pg_server["port"]))
    page.fill("#id_dbname", "postgres")
    page.fill("#id_user", pg_server["user"])

    page.click("button:has-text('Test connection')")

    page.locator(".test-result.ok").wait_for()
    assert page.locator(".field .error").count() == 0
    assert page.locator(".has-error").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_successful_destination_test_clears_the_old_errors(live_server, page, admin_user, tmp_path):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/destinations/new/")
    page.fill("#id_name", "Local disk")
    page.fill("#id_path", "relative/path")
    page.click("button:has-text('Save destination')")
    page.locator(".field .error").first.wait_for()
    page.click("button:has-text('Test')")
    page.locator(".test-result.bad").wait_for()
    page.fill("#id_path", str(tmp_path))

    page.click("button:has-text('Test')")

    page.locator(".test-result.ok").wait_for()
    assert page.locator(".field .error, .test-result.bad").count() == 0
    assert page.locator(".has-error").count() == 0


@pytest.fixture
def plan(pg_and_sqlite):
    pg, _, disk = pg_and_sqlite
    return services.save_plan("test", BackupPlan(name="Nightly", source=pg), destinations=[disk])


@pytest.mark.django_db(transaction=True)
def test_the_label_pattern_works_in_chromium(live_server, page, admin_user, plan):
    console = []
    page.on("console", lambda message: console.append(message.text))
    log_in(page, live_server, admin_user)
    for path in (plan.get_absolute_url(), plan.source.get_absolute_url()):
        page.goto(live_server.url + path)
        label = page.locator("input[name=label]")
        label.fill("pre migration!")
        assert label.evaluate("input => input.validity.patternMismatch")
        label.fill("pre-migration_2")
        assert label.evaluate("input => input.validity.valid")
    assert not [text for text in console if "pattern" in text.lower()], console


def test_a_refused_label_is_kept_in_the_box(admin_client, plan):
    for back_to in (plan.get_absolute_url(), plan.source.get_absolute_url()):
        response = admin_client.post(
            reverse("plan_run", args=[plan.pk]), {"label": "pre migration!", "next": back_to}, follow=True
        )
        assert response.redirect_chain[-1][0].startswith(back_to)
        page = response.content.decode()
        assert re.search(r'<input[^>]*name="label"[^>]*value="pre migration!"', page)
        assert "“pre migration!” cannot be a label" in page
    assert not plan.backups.exists()


# --- compression level (issue 22) ----------------------------------------------


def plan_post(admin_client, source, destination, plan=None, **fields):
    """The plan form posted with every field filled as a user would, `fields` changed."""
    url = reverse("plan_edit", args=[plan.pk]) if plan else reverse("plan_new")
    data = {
        "name": "Nightly",
        "source": source.pk,
        "schedule_preset": "cron",
        "schedule": "0 3 * * *",
        "format": "custom",
        "compression": "zstd",
        "compression_level": "",
        "dump_jobs": 2,
        "encrypt": "on",
        "enabled": "on",
        "destinations": [destination.pk],
        "retention_mode": "last",
        "keep_last": 7,
        "keep_daily": 30,
        "keep_weekly": 12,
        "keep_monthly": 12,
        "keep_yearly": 5,
        "keep_days": 30,
        "keep_minimum": 1,
        "keep_manual_days": 30,
        "restore_test_days": 7,
        "checksum_all_days": 30,
        **fields,
    }
    return admin_client.post(url, data)


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        ("gzip", "12", "A gzip level is from 1 to 9; empty for the default (6)."),
        ("zstd", "20", "A zstd level is from 1 to 19; empty for the default (1)."),
        ("zstd", "0", "A zstd level is from 1 to 19; empty for the default (1)."),
        ("none", "3", "Without compression there is no level: leave it empty."),
    ],
)
def test_a_compression_level_the_compression_does_not_have_is_refused(
    admin_client, pg_and_sqlite, compression, level, message
):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, compression=compression, compression_level=level)
    assert response.status_code == 200
    assert response.context["form"].errors["compression_level"] == [message]
    assert not BackupPlan.objects.exists()


@pytest.mark.parametrize(
    ("compression", "level", "saved", "used"),
    [
        ("zstd", "19", 19, 19),
        ("gzip", "1", 1, 1),
        ("zstd", "", None, 1),
        ("gzip", "", None, 6),
        ("none", "", None, None),
    ],
)
def test_a_compression_level_that_fits_is_saved(admin_client, pg_and_sqlite, compression, level, saved, used):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, compression=compression, compression_level=level)
    assert response.status_code == 302, response.context["form"].errors
    plan = BackupPlan.objects.get()
    assert plan.compression_level == saved
    assert plan.effective_compression_level() == used
    page = admin_client.get(plan.get_absolute_url()).content.decode()
    shown = re.search(r"<dt>Compression</dt><dd>(.*?)</dd>", page, re.S).group(1)
    expected = {
        (19, 19): "zstd level 19",
        (1, 1): "gzip level 1",
        (None, 1): 'zstd level 1 <span class="muted">(the default)</span>',
        (None, 6): 'gzip level 6 <span class="muted">(the default)</span>',
        (None, None): "None",
    }[saved, used]
    assert " ".join(shown.split()) == expected


def test_the_plan_form_offers_the_level_beside_the_compression(admin_client, pg_and_sqlite):
    page = admin_client.get(reverse("plan_new")).content.decode()
    assert page.index('name="compression"') < page.index('name="compression_level"') < page.index('name="encrypt"')
    assert re.search(r'<input[^>]*name="compression_level"[^>]*max="19"', page)
    assert "Empty: the default (zstd 1, gzip 6). Higher zstd levels are slower, and on most dumps barely" in page


def test_a_changed_compression_level_is_audited(admin_client, plan):
    disk = plan.destinations.get()
    response = plan_post(admin_client, plan.source, disk, plan=plan, compression_level="9")
    assert response.status_code == 302, response.context["form"].errors
    plan.refresh_from_db()
    assert plan.compression_level == 9
    event = AuditEvent.objects.filter(action="plan.update").latest("id")
    assert event.changes["compression_level"] == 9

    plan_post(admin_client, plan.source, disk, plan=plan, compression_level="")
    event = AuditEvent.objects.filter(action="plan.update").latest("id")
    assert event.changes["compression_level"] is None


# --- directory format and its parallel jobs (issue 22) ------------------------


def test_a_directory_plan_with_four_dump_jobs_is_saved_and_shown(admin_client, pg_and_sqlite):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, format="directory", dump_jobs="4")
    assert response.status_code == 302, response.context["form"].errors
    plan = BackupPlan.objects.get()
    assert (plan.format, plan.dump_jobs) == ("directory", 4)
    page = admin_client.get(plan.get_absolute_url()).content.decode()
    shown = re.search(r"<dt>Parallel dump jobs</dt><dd>(.*?)</dd>", page, re.S).group(1)
    assert (
        " ".join(shown.split()) == '4 <span class="muted">(tables dumped at once; 5 connections to the source)</span>'
    )
    assert "PostgreSQL directory with parallel jobs (pg_dump -Fd -j)" in page


@pytest.mark.parametrize("jobs", ["0", "33"])
def test_dump_jobs_out_of_bounds_are_refused_in_words(admin_client, pg_and_sqlite, jobs):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, format="directory", dump_jobs=jobs)
    assert response.status_code == 200
    assert response.context["form"].errors["dump_jobs"] == [
        "pg_dump runs from 1 to 32 jobs at once: each one is a connection to the source."
    ]
    assert not BackupPlan.objects.exists()


def test_dump_jobs_left_out_keep_the_plans_number(admin_client, plan):
    """A form from before the field (an open tab, a script) changes nothing."""
    plan.dump_jobs = 6
    plan.save()
    disk = plan.destinations.get()
    response = plan_post(admin_client, plan.source, disk, plan=plan, dump_jobs="")
    assert response.status_code == 302, response.context["form"].errors
    plan.refresh_from_db()
    assert plan.dump_jobs == 6
    assert "dump_jobs" not in AuditEvent.objects.filter(action="plan.update").latest("id").changes

    plan_post(admin_client, plan.source, disk, plan=plan, format="directory", dump_jobs="8")
    plan.refresh_from_db()
    assert (plan.format, plan.dump_jobs) == ("directory", 8)
    assert AuditEvent.objects.filter(action="plan.update").latest("id").changes["dump_jobs"] == 8


def test_a_plan_of_another_format_keeps_its_dump_jobs_and_does_not_show_them(admin_client, pg_and_sqlite):
    pg, _, disk = pg_and_sqlite
    response = plan_post(admin_client, pg, disk, format="custom", dump_jobs="7")
    assert response.status_code == 302, response.context["form"].errors
    plan = BackupPlan.objects.get()
    assert plan.dump_jobs == 7  # kept for a change to the directory format
    assert "Parallel dump jobs" not in admin_client.get(plan.get_absolute_url()).content.decode()


def test_the_plan_form_offers_dump_jobs_beside_the_format(admin_client, pg_and_sqlite):
    page = admin_client.get(reverse("plan_new")).content.decode()
    assert page.index('name="format"') < page.index('name="dump_jobs"') < page.index('name="compression"')
    assert re.search(r'<input[^>]*name="dump_jobs"[^>]*value="2"[^>]*min="1"[^>]*max="32"', page)
    assert "Directory format only (1 to 32): pg_dump dumps this many tables at once" in page
    assert "Other formats keep the number but do not use it." in page


@pytest.mark.django_db(transaction=True)
def test_dump_jobs_are_shown_for_the_directory_format_only(live_server, page, admin_user, pg_and_sqlite):
    pg, _, _ = pg_and_sqlite
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/plans/new/?source={pg.pk}")
    jobs = page.locator("[data-field=dump_jobs]")
    assert not jobs.is_visible()  # custom, the default

    page.select_option("#id_format", "directory")
    assert jobs.is_visible()
    page.fill("#id_dump_jobs", "40")  # more than pg_dump is allowed here

    page.select_option("#id_format", "plain")
    # Hidden, the browser would refuse the save without showing why: it stays until it fits.
    assert jobs.is_visible()
    page.fill("#id_dump_jobs", "4")
    page.select_option("#id_format", "custom")
    assert not jobs.is_visible()
