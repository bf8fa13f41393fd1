"""The backup guide's endpoints (catalog/api/compat.py): POST /api/backup/create
and GET /api/cron/status with a bearer token, aliases of the v1 API that
answer as documented ("ok" in every answer, 503 when something is wrong)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from catalog.models import AuditEvent, Backup, Source
from catalog.schedules import TICK_SCHEDULE
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, recorded_plan, recorded_source, sqlite_plan


@pytest.fixture
def operator(db):
    return bearer(make_token(scopes=["read", "backup"], name="nightly script")[1])


@pytest.fixture
def reader(db):
    return bearer(make_token(scopes=["read"], name="monitor")[1])


def create(client, headers, body=None):
    return client.post("/api/backup/create", body or {}, content_type="application/json", headers=headers)


# --- POST /api/backup/create ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_one_plan_a_bare_create_runs_it_and_says_where_to_look(client, operator, tmp_path):
    plan = sqlite_plan(tmp_path)

    answer = client.generic("POST", "/api/backup/create", headers=operator)  # no body, as `curl -X POST` sends

    assert answer.status_code == 202, answer.content
    body = answer.json()
    backup = Backup.objects.get()
    assert body == {
        "ok": True,
        "backup_id": backup.pk,
        "status": "succeeded",  # the tests' queue runs it at once
        "label": "",
        "plan": {"id": plan.pk, "name": "Hourly"},
        "source": {"id": plan.source_id, "name": "Shop"},
        "status_url": f"http://testserver/api/v1/backups/{backup.pk}",
    }
    assert answer["Location"] == body["status_url"]
    assert client.get(body["status_url"], headers=operator).json()["status"] == "succeeded"
    assert backup.trigger == "api" and backup.plan == plan
    assert AuditEvent.objects.filter(action="api.backup_create", actor_label="api token nightly script").exists()


@pytest.mark.django_db
def test_a_plan_is_named_by_id_or_name_or_by_its_source(client, operator, tmp_path):
    shop = recorded_source("Shop")
    nightly = recorded_plan(shop, name="Shop nightly")
    weekly = recorded_plan(recorded_source("Archive"), name="Archive weekly")

    several = create(client, operator)
    assert several.status_code == 409
    assert several.json() == {
        "ok": False,
        "error": 'There are several plans (Archive weekly, Shop nightly): name one, as "plan": its id or name.',
    }
    by_name = create(client, operator, {"plan": "Archive weekly", "label": "pre-migration"})
    assert by_name.status_code == 202 and by_name.json()["plan"] == {"id": weekly.pk, "name": "Archive weekly"}
    assert Backup.objects.get(plan=weekly).label == "pre-migration"
    by_source = create(client, operator, {"source": "Shop"})
    assert by_source.status_code == 202 and by_source.json()["plan"]["id"] == nightly.pk
    by_id = create(client, operator, {"source": shop.pk, "plan": nightly.pk})
    assert by_id.status_code == 409 and "already queued or running" in by_id.json()["error"]  # the one above
    assert by_id.json()["ok"] is False


@pytest.mark.django_db
def test_create_refusals_say_ok_false(client, operator, reader):
    shop = recorded_source("Shop")
    recorded_plan(shop, name="Shop nightly")

    answers = {
        "unknown plan": (create(client, operator, {"plan": "nope"}), 404, "No plan 'nope'."),
        "not of that source": (
            create(client, operator, {"plan": "Shop nightly", "source": shop.pk + 1}),
            404,
            f"No source {shop.pk + 1}.",
        ),
        "bad label": (
            create(client, operator, {"label": "two words"}),
            400,
            "label may use letters, digits, - and _ only, up to 100 characters.",
        ),
        "misspelt": (
            create(client, operator, {"lable": "x"}),
            400,
            "Unknown member 'lable'; expected plan, source, label, keep_days.",
        ),
    }
    for what, (answer, status, message) in answers.items():
        assert (answer.status_code, answer.json()) == (status, {"ok": False, "error": message}), what
    no_token = create(client, {})
    assert no_token.status_code == 401 and no_token.json()["ok"] is False
    read_only = create(client, reader)
    assert read_only.status_code == 403 and read_only.json()["ok"] is False
    assert "'backup' scope" in read_only.json()["error"]
    assert client.get("/api/backup/create", headers=operator).json()["ok"] is False  # 405
    assert not Backup.objects.exists()


# --- GET /api/cron/status ------------------------------------------------------------------


@pytest.mark.django_db
def test_cron_status_is_ok_when_every_scheduled_plan_runs(client, reader):
    plan = recorded_plan(recorded_source("Shop"), name="Shop nightly", schedule="0 3 * * *")
    recorded_plan(recorded_source("Old"), name="Old plan", enabled=False)
    failed = recorded_backup(plan, status="failed", minutes_ago=60 * 24)
    good = recorded_backup(plan, minutes_ago=30)
    Source.objects.filter(pk=plan.source_id).update(status="up")

    answer = client.get("/api/cron/status", headers=reader)

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["ok"] is True and body["problems"] == [] and (body["late"], body["failing"]) == (0, 0)
    assert body["scheduler"] == {"running": True, "silent_since": None}
    [listed] = body["plans"]  # the disabled plan is not scheduled
    assert listed["name"] == "Shop nightly" and listed["schedule"] == "0 3 * * *"
    assert listed["schedule_in_words"] == "At 03:00"
    assert listed["last_run"]["backup_id"] == good.pk and listed["last_status"] == "succeeded"
    assert listed["last_success_at"] is not None and listed["next_run"] is not None
    assert (listed["late"], listed["failing"], listed["source_status"]) == (False, False, "up")
    assert failed.pk != good.pk


@pytest.mark.django_db
def test_cron_status_is_503_when_a_plan_fails_or_is_late(client, reader):
    failing = recorded_plan(recorded_source("Shop"), name="Shop nightly")
    recorded_backup(failing, minutes_ago=60)
    broken = recorded_backup(failing, status="failed", minutes_ago=5)
    Backup.objects.filter(pk=broken.pk).update(error="pg_dump: connection refused")
    late = recorded_plan(recorded_source("Ledger"), name="Ledger hourly", schedule="0 * * * *")
    Source.objects.filter(pk=late.source_id).update(status="late", status_reason="No good backup for 3 h.")
    quiet = recorded_plan(recorded_source("Archive"), name="Archive weekly")
    recorded_backup(quiet, status="failed")
    Source.objects.filter(pk=quiet.source_id).update(paused=True, status="paused")

    answer = client.get("/api/cron/status", headers=reader)

    assert answer.status_code == 503
    body = answer.json()
    assert body["ok"] is False and (body["late"], body["failing"]) == (1, 1)
    assert body["problems"] == [
        "Plan Ledger hourly: source Ledger is late: No good backup for 3 h.",
        f"Plan Shop nightly: backup #{broken.pk} failed: pg_dump: connection refused",
    ]
    by_name = {plan["name"]: plan for plan in body["plans"]}
    assert by_name["Archive weekly"]["paused"] and not by_name["Archive weekly"]["failing"]


@pytest.mark.django_db
def test_cron_status_says_when_the_scheduler_stopped(client, reader):
    plan = recorded_plan(recorded_source("Shop"), name="Shop nightly")
    recorded_backup(plan)
    since = timezone.now() - timedelta(hours=2)
    Schedule.objects.create(
        name=TICK_SCHEDULE, func="catalog.tasks.tick", schedule_type=Schedule.MINUTES, next_run=since
    )

    answer = client.get("/api/cron/status", headers=reader)

    assert answer.status_code == 503
    body = answer.json()
    assert body["scheduler"]["running"] is False and body["problems"][0].startswith("The scheduler has not run since")


@pytest.mark.django_db
def test_cron_status_needs_the_read_scope(client):
    _, backup_only = make_token(scopes=["backup"])

    assert client.get("/api/cron/status", headers=bearer(backup_only)).json() == {
        "ok": False,
        "error": "This API token does not have the 'read' scope this request needs (it has: backup).",
    }
    assert client.get("/api/cron/status").status_code == 401
    assert AuditEvent.objects.filter(action="api.cron_status").count() == 1
