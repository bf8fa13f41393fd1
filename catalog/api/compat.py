"""The backup guide's own endpoints, at /api/ beside /api/v1/: scripts
written from the guide Strongroom grew from call POST /api/backup/create and
GET /api/cron/status with a bearer token. Both are aliases of the v1 API
(POST /api/v1/backups, GET /api/v1/status), with the same scopes and
services, answering in the guide's terms: every answer says "ok", a backup
is named by its plan or source (none needed when there is one plan), and
the cron status is 503 when a scheduled plan is late or failing, so that a
plain HTTP monitor alerts on it."""

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone

from catalog import queues, services
from catalog.api.auth import ApiRequest, authorize, by_method, error
from catalog.api.serialize import SEVERITY
from catalog.api.views import (
    MAX_ID,
    BadRequest,
    handles_bad_requests,
    json_body,
    label_and_keep_days,
    start_plan,
    whole_number,
)
from catalog.models import Backup, BackupPlan, Source
from catalog.schedules import describe
from catalog.text import moment_text

# A backup that ended (not cancelled): what says whether a plan's runs work.
ENDED = (Backup.SUCCEEDED, Backup.PARTIAL, Backup.FAILED)


def says_ok(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Adds "ok": false to every error, the token's refusals included: the
    guide's scripts test "ok" whatever the answer."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if response.status_code >= 400 and response.get("Content-Type") == "application/json":
            body = json.loads(response.content)
            if isinstance(body, dict) and "ok" not in body:
                response.content = json.dumps({"ok": False, **body}).encode()
        return response

    return wrapped


# --- POST /api/backup/create -----------------------------------------------------------


def named(model: type[Source] | type[BackupPlan], value: Any, what: str) -> QuerySet[Any]:
    """The rows `value` names: an id (a number), or a name (a string)."""
    if isinstance(value, str):
        return model.objects.filter(name=value) if "\x00" not in value else model.objects.none()
    number = whole_number(value)
    if number is None or number < 1:
        raise BadRequest(f"{what} must be an id (a number) or a name (a string).")
    return model.objects.filter(pk=number) if number <= MAX_ID else model.objects.none()


def chosen_plan(data: dict[str, Any]) -> BackupPlan | JsonResponse:
    """The plan the request names, or the only plan (of the source named)."""
    plans = BackupPlan.objects.select_related("source").order_by("name")
    if "source" in data:
        source = named(Source, data["source"], "source").first()
        if source is None:
            return error(f"No source {data['source']!r}.", 404)
        plans = plans.filter(source=source)
    if "plan" in data:
        plan = plans.filter(pk__in=named(BackupPlan, data["plan"], "plan").values("pk")).first()
        of = " of that source" if "source" in data else ""
        return plan or error(f"No plan {data['plan']!r}{of}.", 404)
    found = list(plans[:21])
    if len(found) == 1:
        return found[0]
    if not found:
        return error("There is no plan to run" + (" for that source." if "source" in data else "."), 404)
    names = ", ".join(plan.name for plan in found[:20])
    return error(f'There are several plans ({names}): name one, as "plan": its id or name.', 409)


@authorize("backup", "backup_create")
@handles_bad_requests
def backup_create(request: ApiRequest) -> JsonResponse:
    """Alias of POST /api/v1/backups: queues a backup of the plan named (or the only one)."""
    data = json_body(request, ("plan", "source", "label", "keep_days"))
    label, keep_days = label_and_keep_days(data)
    plan = chosen_plan(data)
    if isinstance(plan, JsonResponse):
        return plan
    try:
        backup = start_plan(request, plan, label, keep_days)
    except services.Refused as exc:
        return error(str(exc), 409)
    url = request.build_absolute_uri(reverse("api_backup", args=[backup.pk]))
    response = JsonResponse(
        {
            "ok": True,
            "backup_id": backup.pk,
            "status": backup.status,
            "label": backup.label,
            "plan": {"id": plan.pk, "name": plan.name},
            "source": {"id": plan.source_id, "name": plan.source.name},
            "status_url": url,
        },
        status=202,
    )
    response["Location"] = url
    return response


# --- GET /api/cron/status --------------------------------------------------------------


def backup_run(backup: Backup | None) -> dict[str, Any] | None:
    if backup is None:
        return None
    return {
        "backup_id": backup.pk,
        "status": backup.status,
        "trigger": backup.trigger,
        "created_at": backup.created_at,
        "finished_at": backup.finished_at,
        "error": backup.error,
    }


def plan_status(plan: BackupPlan) -> tuple[dict[str, Any], list[str]]:
    """A scheduled plan as the cron status lists it, and its problems in words."""
    backups = plan.backups.without_log().order_by("-created_at", "-pk")
    last = backups.first()
    last_ended = backups.filter(status__in=ENDED).first()
    last_success = backups.filter(status=Backup.SUCCEEDED).first()
    source = plan.source
    watched = not source.paused and source.status != "paused"
    failing = watched and last_ended is not None and last_ended.status != Backup.SUCCEEDED
    late = watched and SEVERITY.get(source.status, 0) > 0 and source.status != "failing"
    problems = []
    if failing:
        assert last_ended is not None  # failing says so
        problems.append(f"Plan {plan.name}: backup #{last_ended.pk} {last_ended.status}: {last_ended.error or '-'}")
    if late:
        problems.append(f"Plan {plan.name}: source {source.name} is {source.status}: {source.status_reason}")
    upcoming = plan.next_runs(1)
    return {
        "id": plan.pk,
        "name": plan.name,
        "source": {"id": source.pk, "name": source.name},
        "schedule": plan.schedule,
        "schedule_in_words": describe(plan.schedule),
        "source_status": source.status,
        "paused": not watched,
        "last_run": backup_run(last),
        "last_status": last.status if last else None,
        "last_success_at": last_success.created_at if last_success else None,
        "next_run": upcoming[0] if upcoming else None,
        "late": late,
        "failing": failing,
    }, problems


@authorize("read", "cron_status")
def cron_status(request: ApiRequest) -> JsonResponse:
    """Alias of GET /api/v1/status, by scheduled plan: 200 when every one
    runs as it should, 503 (same body, "ok": false) when one is late or
    failing or the scheduler itself stopped."""
    now = timezone.now()
    plans, problems = [], []
    enabled = BackupPlan.objects.filter(enabled=True).select_related("source").order_by("name")
    for plan in enabled.filter(~Q(schedule="")):
        listed, found = plan_status(plan)
        plans.append(listed)
        problems += found
    silent_since = queues.monitor_silent_since(now)
    if silent_since is not None:
        problems.insert(
            0,
            f"The scheduler has not run since {moment_text(silent_since)}: no scheduled backup starts and no "
            "alert is sent. Start the worker cluster (manage.py qcluster).",
        )
    body = {
        "ok": not problems,
        "checked_at": now,
        "scheduler": {"running": silent_since is None, "silent_since": silent_since},
        "problems": problems,
        "late": sum(plan["late"] for plan in plans),
        "failing": sum(plan["failing"] for plan in plans),
        "plans": plans,
    }
    return JsonResponse(body, status=200 if not problems else 503)


# What each alias answers, by method (catalog/api/urls.py, included at /api/).
backup_create_resource = says_ok(by_method(POST=backup_create))
cron_status_resource = says_ok(by_method(GET=cron_status))
