"""Schedules on day one: presets besides cron, every cron in words, dates
that never come refused in words, and a daily plan that runs once on the
nights the clocks change, with django-q2's own scheduler doing the running."""

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.scheduler import scheduler
from django_q.utils import localtime

from catalog import schedules, services
from catalog.models import AuditEvent, BackupPlan, Source
from tests.factories import local_destination, make_plan

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")
UTC = UTC


@pytest.fixture
def source(db):
    return services.save_source(
        "test", Source(name="Shop", engine="sqlite", sqlite_path="/srv/shop.sqlite3", port=None)
    )


@pytest.fixture
def destination(tmp_path):
    return local_destination(tmp_path / "disk")


def plan_form(source, destination, **schedule):
    """What the plan form posts, its schedule part given."""
    return {
        "name": "Nightly",
        "source": source.pk,
        "format": "sqlite",
        "compression": "zstd",
        "encrypt": "on",
        "destinations": [destination.pk],
        "enabled": "on",
        "retention_mode": "gfs",
        "keep_daily": "30",
        "keep_weekly": "12",
        "keep_monthly": "12",
        "keep_yearly": "5",
        "keep_last": "7",
        "keep_days": "30",
        "keep_minimum": "1",
        "restore_test_days": "7",
        "checksum_all_days": "30",
        "schedule": "",
        **schedule,
    }


# --- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, fields, cron, words",
    [
        ("hourly", {"schedule_minute": "15"}, "15 * * * *", "At 15 minutes past the hour"),
        ("daily", {"schedule_time": "02:30"}, "30 2 * * *", "At 02:30"),
        ("weekly", {"schedule_time": "04:05", "schedule_weekday": "0"}, "5 4 * * 0", "At 04:05, only on Sunday"),
        ("monthly", {"schedule_time": "01:00", "schedule_day": "28"}, "0 1 28 * *", "At 01:00, on day 28 of the month"),
    ],
)
def test_a_preset_is_saved_as_its_cron_and_edited_as_the_preset(
    admin_client, source, destination, preset, fields, cron, words
):
    response = admin_client.post(
        "/plans/new/",
        plan_form(source, destination, schedule_preset=preset, **fields, schedule="this box is not read for a preset"),
    )

    plan = BackupPlan.objects.get(name="Nightly")
    assert response.status_code == 302 and plan.schedule == cron
    assert Schedule.objects.get(name=plan.schedule_name()).cron == cron
    page = admin_client.get(f"/plans/{plan.pk}/edit/").content.decode()
    assert f'<option value="{preset}" selected>' in page
    for name, value in fields.items():
        assert re.search(rf'name="{name}"[^>]*value="{value}"', page) or re.search(
            rf'<option value="{value}" selected>', page
        ), name
    assert words in admin_client.get(f"/plans/{plan.pk}/").content.decode()


def test_a_preset_asks_for_what_it_needs_and_a_monthly_day_every_month_has(admin_client, source, destination):
    page = admin_client.post(
        "/plans/new/", plan_form(source, destination, schedule_preset="weekly", schedule_time="")
    ).content.decode()
    assert "Say this for a schedule that runs every week." in page

    page = admin_client.post(
        "/plans/new/",
        plan_form(source, destination, schedule_preset="monthly", schedule_time="03:00", schedule_day="31"),
    ).content.decode()
    assert "Ensure this value is less than or equal to 28." in page and "1 to 28, so that every month has it." in page
    assert not BackupPlan.objects.exists()


def test_a_cron_of_ones_own_still_works_and_a_script_may_post_only_the_cron(admin_client, source, destination):
    admin_client.post("/plans/new/", plan_form(source, destination, schedule_preset="cron", schedule="0  6 * * 1-5"))
    plan = BackupPlan.objects.get()
    assert plan.schedule == "0 6 * * 1-5"
    assert '<option value="cron" selected>' in admin_client.get(f"/plans/{plan.pk}/edit/").content.decode()

    admin_client.post(f"/plans/{plan.pk}/edit/", plan_form(source, destination, schedule="45 23 * * *"))
    plan.refresh_from_db()
    assert plan.schedule == "45 23 * * *"
    event = AuditEvent.objects.filter(action="plan.update").latest("id")
    assert event.changes == {"schedule": "45 23 * * *"}  # the cron changed; no preset input is named


# --- dates that never come ------------------------------------------------------------------


def test_a_date_that_never_comes_is_refused_in_words_on_save_and_in_the_preview(admin_client, source, destination):
    response = admin_client.post(
        "/plans/new/", plan_form(source, destination, schedule_preset="cron", schedule="0 0 30 2 *")
    )
    assert response.status_code == 200
    assert "“0 0 30 2 *” never runs: February has no day 30." in response.content.decode()
    assert not BackupPlan.objects.exists() and not Schedule.objects.filter(name__startswith="strongroom-plan").exists()

    response = admin_client.get("/plans/cron-preview/", {"schedule": "0 0 31 4,6,9,11 *"})
    assert response.status_code == 200
    assert "never runs: April, June, September and November have no day 31." in response.content.decode()
    leap = admin_client.get("/plans/cron-preview/", {"schedule": "0 0 29 2 *"}).content.decode()
    assert "At 00:00, on day 29 of the month, only in February" in leap and "<li>" in leap  # every leap year


def test_the_preview_reads_the_preset_too(admin_client):
    page = admin_client.get(
        "/plans/cron-preview/",
        {"schedule_preset": "weekly", "schedule_time": "02:30", "schedule_weekday": "1", "schedule": ""},
    ).content.decode()
    assert "At 02:30, only on Monday" in page and "30 2 * * 1" in page
    assert len(re.findall(r"<li>Mon ", page)) == 5


# --- in words everywhere ----------------------------------------------------------------------


def test_every_page_that_shows_a_schedule_says_it_in_words(admin_client, source, destination):
    make_plan(source, [destination], schedule="30 2 * * 1-5", format="sqlite")
    words = "At 02:30, Monday through Friday"
    for url in ("/plans/", f"/plans/{BackupPlan.objects.get().pk}/", f"/sources/{source.pk}/", "/"):
        assert words in admin_client.get(url).content.decode(), url


# --- the nights the clocks change ---------------------------------------------------------------


@pytest.fixture
def berlin(settings, monkeypatch):
    """TIME_ZONE Europe/Berlin for Django and django-q2 alike; tasks stay in the broker."""
    settings.TIME_ZONE = "Europe/Berlin"
    monkeypatch.setattr(Conf, "TIME_ZONE", "Europe/Berlin")
    monkeypatch.setattr(Conf, "SYNC", False)


def fires(source, destination, start, end, schedule="30 2 * * *", step=timedelta(minutes=15)):
    """The runs django-q2's scheduler, called every `step` from `start` to
    `end`, queues for the plan: the slots they were due at, in Berlin."""
    with time_machine.travel(start, tick=False):
        plan = make_plan(source, [destination], schedule=schedule, format="sqlite")
    Schedule.objects.exclude(name=plan.schedule_name()).delete()  # the tick and the nightly prune are not watched here
    broker, fired, now = get_broker(), [], start
    while now < end:
        with time_machine.travel(now, tick=False):
            due = Schedule.objects.get(name=plan.schedule_name())
            if due.next_run < timezone.now():
                # The scheduler repeats this until it is true, holding the schedules locked: never spin.
                assert due.calculate_next_run() > localtime(), f"django-q2's scheduler would spin at {now}"
            queued = OrmQ.objects.count()
            scheduler(broker)
            if OrmQ.objects.count() > queued:
                fired.append(due.next_run.astimezone(BERLIN))
        now += step
    return fired


@pytest.mark.django_db(transaction=True)  # django-q2's scheduler commits, and closes a connection inside a transaction
def test_a_daily_plan_at_0230_runs_once_on_the_night_the_clocks_go_back(berlin, source, destination):
    # Sunday 27 October 2024, 03:00 summer time became 02:00 winter time: 02:30 happened twice.
    fired = fires(source, destination, datetime(2024, 10, 26, 18, tzinfo=UTC), datetime(2024, 10, 28, 6, tzinfo=UTC))

    assert Counter(at.date().isoformat() for at in fired) == {"2024-10-27": 1, "2024-10-28": 1}
    assert [at.strftime("%H:%M %Z") for at in fired] == ["02:30 CEST", "02:30 CET"]  # the first 02:30, then 24+1 h on


@pytest.mark.django_db(transaction=True)  # django-q2's scheduler commits, and closes a connection inside a transaction
def test_a_daily_plan_at_0230_runs_once_on_the_night_the_clocks_go_forward(berlin, source, destination):
    # Sunday 31 March 2024, 02:00 winter time became 03:00 summer time: there was no 02:30.
    fired = fires(source, destination, datetime(2024, 3, 30, 18, tzinfo=UTC), datetime(2024, 4, 1, 6, tzinfo=UTC))

    assert Counter(at.date().isoformat() for at in fired) == {"2024-03-31": 1, "2024-04-01": 1}
    # Run as long after midnight as on other days: 24 hours after the day before's 02:30.
    assert [at.strftime("%H:%M %Z") for at in fired] == ["03:30 CEST", "02:30 CEST"]


def test_an_hourly_plan_runs_every_real_hour_through_both_changes(berlin):
    for day, hours in ((datetime(2024, 10, 26, 22, tzinfo=UTC), 25), (datetime(2024, 3, 30, 23, tzinfo=UTC), 23)):
        runs = schedules.next_runs("0 * * * *", 30, day - timedelta(seconds=1))
        local_day = [run for run in runs if run.astimezone(BERLIN).date() == (day + timedelta(hours=2)).date()]
        assert len(local_day) == hours  # the long day has 25 hourly runs, the short one 23
        assert all(later - earlier == timedelta(hours=1) for earlier, later in pairwise(runs))
