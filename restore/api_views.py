"""Restores through the JSON API, under /api/v1/: the wizard's choices
(restore/views.py) and the same service, restore/services.py, so the same
checks and refusals. Preview is the default mode and changes nothing: into
the existing database it is the wizard's comparison (a job on the worker),
into a new database, which there is nothing to compare with, the answer is
the plan the wizard's review shows, as with "dry_run"."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from catalog.api import tokens
from catalog.api.auth import ApiRequest, authorize, by_method, error
from catalog.api.serialize import seconds
from catalog.api.views import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    MAX_OFFSET,
    BadRequest,
    handles_bad_requests,
    int_param,
    json_body,
    page_link,
    whole_number,
)
from catalog.errors import Refused
from catalog.models import Backup, RestoreServer
from restore import services
from restore.models import RestoreJob

FIELDS = (
    "backup",
    "target",
    "restore_server",
    "database",
    "tables",
    "mode",
    "confirm_database",
    "owners",
    "terminate_connections",
    "dry_run",
)
# The review step's choice of owners and grants (restore/views.py step_review).
OWNERS = ("keep", "without", "create")
LIST_FILTERS = ("source", "backup", "status", "limit", "offset")
MAX_TABLES = 10_000


# --- what the API says of a restore ----------------------------------------------


def named(obj: Any) -> dict[str, Any] | None:
    return {"id": obj.pk, "name": obj.name} if obj is not None else None


def owners_choice(job: RestoreJob) -> str:
    if job.without_owners:
        return "without"
    return "create" if job.create_missing_roles else "keep"


def choices(job: RestoreJob) -> dict[str, Any]:
    """What was asked, as the request names it."""
    return {
        "backup": job.backup_id,
        "source": named(job.source),
        "target": job.target,
        "restore_server": named(job.restore_server),
        "database": job.target_database,
        "tables": job.tables,
        "mode": job.mode,
        "owners": owners_choice(job),
        "terminate_connections": job.terminate_connections,
        "plan": job.describe(),
    }


def current_step(job: RestoreJob) -> str:
    running = [step["name"] for step in job.steps if step.get("status") == "running"]
    return running[-1] if running else ""


def restore_detail(request: HttpRequest, job: RestoreJob) -> dict[str, Any]:
    """What the restore's page shows: the choices, each step, the outcome
    and the report (row counts, comparison, roles, warnings). No secret: the
    report holds names and counts, the steps what the checks said."""
    return {
        "id": job.pk,
        **choices(job),
        "status": job.status,
        "cancel_requested": job.cancel_requested,
        "current_step": current_step(job),
        "steps": job.steps,
        "safety_backup": job.safety_backup_id,
        "summary": job.summary,
        "report": job.report,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_seconds": seconds(job.duration()) if job.finished_at else None,
        "links": {
            "self": request.build_absolute_uri(reverse("api_restore", args=[job.pk])),
            "page": request.build_absolute_uri(job.get_absolute_url()),
        },
    }


def restore_plan(job: RestoreJob) -> dict[str, Any]:
    """The review step's plan: what a run would do, nothing started or saved."""
    changes = job.changes_existing_database()
    return {
        "started": False,
        **choices(job),
        "action": job.action_label(),
        "changes_existing_database": changes,
        "safety_backup": changes,  # taken first by every change to an existing database
        "confirm_database": job.target_database if changes else None,
        "roles_missing": services.roles_missing_on_target(job),
    }


# --- reading the request ----------------------------------------------------------


def choice(data: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(name, default)
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}.")
    return str(value)


def flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false.")
    return value


def text(data: dict[str, Any], name: str) -> str | None:
    """The member's string, or None when it is left out."""
    if name not in data:
        return None
    if not isinstance(data[name], str):
        raise BadRequest(f"{name} must be a string.")
    return str(data[name])


def table_names(data: dict[str, Any]) -> list[str]:
    tables = data.get("tables", [])
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables) or len(tables) > MAX_TABLES:
        raise BadRequest(f'tables must be a list of "schema.table" names (at most {MAX_TABLES}); empty: everything.')
    return tables


def identifier(data: dict[str, Any], name: str, required: bool = False) -> int | None:
    value = data.get(name)
    if value is None and not required:
        return None
    number = whole_number(value)
    if number is None or number < 1:
        raise BadRequest(f"{name} must be an id: a whole number from 1.")
    return number


# --- the views ------------------------------------------------------------------------


@authorize("restore", "restore_start")
@handles_bad_requests
def restore_start(request: ApiRequest) -> JsonResponse:
    """Checks a restore as the wizard's review does, then answers its plan
    (preview into a new database, or dry_run) or queues it (202)."""
    data = json_body(request, FIELDS)
    backup_id = identifier(data, "backup", required=True)
    target = choice(data, "target", (RestoreJob.NEW, RestoreJob.EXISTING), RestoreJob.NEW)
    mode = choice(data, "mode", tuple(dict(RestoreJob.MODE_CHOICES)), RestoreJob.PREVIEW)
    owners = choice(data, "owners", OWNERS, "keep")
    database, confirmed = text(data, "database"), text(data, "confirm_database") or ""
    tables = table_names(data)
    terminate, dry_run = flag(data, "terminate_connections"), flag(data, "dry_run")
    server_id = identifier(data, "restore_server")
    assert backup_id is not None  # required: identifier() raised otherwise
    found = Backup.objects.select_related("source", "plan").filter(pk=backup_id)
    backup = found.first() if backup_id <= MAX_ID else None
    if backup is None:
        return error(f"No backup with id {backup_id}.", 404)
    server = RestoreServer.objects.filter(pk=server_id).first() if server_id and server_id <= MAX_ID else None
    if server_id is not None and server is None:
        return error(f"No restore server with id {server_id}.", 404)
    if database is None:  # as the wizard's where step suggests it, or the source's own
        database = (
            services.suggest_database_name(backup, server)
            if target == RestoreJob.NEW
            else services.existing_database(backup.source)
        )
    # A new database is only ever filled completely (the wizard offers no mode there):
    # its preview is the plan of that full restore.
    plan_only = dry_run or (target == RestoreJob.NEW and mode == RestoreJob.PREVIEW)
    options: dict[str, Any] = {
        "target": target,
        "database": database,
        "tables": tables,
        "mode": RestoreJob.FULL if target == RestoreJob.NEW and mode == RestoreJob.PREVIEW else mode,
        "confirmed_name": confirmed,
        "restore_server": server,
        "terminate_connections": terminate,
        "without_owners": owners == "without",
        "create_missing_roles": owners == "create",
    }
    try:
        if plan_only:
            job, _host = services.plan_restore(backup, **options)
            return JsonResponse(restore_plan(job))
        token = request.api_token
        job = services.request_restore(tokens.actor_label(token), backup, on_behalf_of=token.created_by, **options)
    except services.NotConfirmed:
        return error(
            f"This restore changes the existing database {database}: repeat its name in the request, "
            f'"confirm_database": "{database}", to confirm. A safety backup is taken first.',
            409,
        )
    except Refused as exc:
        return error(str(exc), 409)
    job.refresh_from_db()  # a synchronous queue (tests) has already run it
    response = JsonResponse(restore_detail(request, job), status=202)
    response["Location"] = request.build_absolute_uri(reverse("api_restore", args=[job.pk]))
    return response


def filtered_restores(params: Any) -> QuerySet[RestoreJob]:
    if unknown := sorted(set(params) - set(LIST_FILTERS)):
        raise BadRequest(f"Unknown parameter {unknown[0][:50]!r}; the filters are {', '.join(LIST_FILTERS)}.")
    jobs = RestoreJob.objects.select_related("backup", "source", "restore_server").order_by("-created_at", "-pk")
    if (source := int_param(params, "source")) is not None:
        jobs = jobs.filter(source_id=source)
    if (backup := int_param(params, "backup")) is not None:
        jobs = jobs.filter(backup_id=backup)
    if (status := params.get("status")) is not None:
        if status not in dict(RestoreJob.STATUS_CHOICES):
            raise BadRequest(f"status must be one of {', '.join(dict(RestoreJob.STATUS_CHOICES))}.")
        jobs = jobs.filter(status=status)
    return jobs


@authorize("read", "restore_list")
@handles_bad_requests
def restore_list(request: ApiRequest) -> JsonResponse:
    """Newest first, `limit` at a time from `offset`."""
    limit = int_param(request.GET, "limit", DEFAULT_LIMIT, maximum=MAX_LIMIT)
    offset = int_param(request.GET, "offset", 0, minimum=0, maximum=MAX_OFFSET)
    jobs = filtered_restores(request.GET)
    count = jobs.count()
    page = jobs.defer("log")[offset : offset + limit]
    return JsonResponse(
        {
            "count": count,
            "limit": limit,
            "offset": offset,
            "next": page_link(request, offset + limit, limit) if offset + limit < count else None,
            "previous": page_link(request, max(offset - limit, 0), limit) if offset > 0 else None,
            "results": [restore_detail(request, job) for job in page],
        }
    )


@authorize("read", "restore_detail")
def restore(request: ApiRequest, pk: int) -> JsonResponse:
    """A restore's progress (its steps as they go), outcome and report."""
    found = RestoreJob.objects.select_related("backup", "source", "restore_server")
    job = found.filter(pk=pk).first() if pk <= MAX_ID else None
    if job is None:
        return error(f"No restore with id {pk}.", 404)
    return JsonResponse(restore_detail(request, job))


restores_resource = by_method(GET=restore_list, POST=restore_start)
restore_resource = by_method(GET=restore)
