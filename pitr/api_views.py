"""Point-in-time restores through the JSON API, under /api/v1/: the same
service and checks as the wizard (pitr/restore_views.py), with the host
named, since the restored server runs on one host's disk."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from catalog.api import tokens
from catalog.api.auth import ApiRequest, authorize, by_method, error
from catalog.api.views import MAX_ID, BadRequest, datetime_param, handles_bad_requests, json_body, whole_number
from catalog.errors import Refused
from catalog.models import Source
from pitr import restores
from pitr.models import PitrRestore

FIELDS = ("target", "target_time", "restore_point", "data_directory", "port", "host")


def restore_detail(request: HttpRequest, job: PitrRestore) -> dict[str, Any]:
    return {
        "id": job.pk,
        "source": job.source_id,
        "kind": "drill" if job.is_drill else "restore",
        "status": job.status,
        "phase": job.phase,
        "host": job.host,
        "target": job.target_kind,
        "target_time": job.target_time,
        "restore_point": job.restore_point,
        "data_directory": job.data_directory,
        "port": job.port,
        "recovered_to": job.recovered_to,
        "summary": job.summary,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "connect": restores.connection_hint(job) if job.server_running() else "",
        "links": {"page": request.build_absolute_uri(reverse("pitr_restore_detail", args=[job.pk]))},
    }


def text(data: dict[str, Any], name: str, max_length: int) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or len(value) > max_length:
        raise BadRequest(f"{name} must be a string of at most {max_length} characters.")
    return value


@authorize("restore", "pitr_restore_start")
@handles_bad_requests
def pitr_restore_start(request: ApiRequest, pk: int) -> JsonResponse:
    """Queues a point-in-time restore of a protected source into a new data
    directory on the chosen host (default: the host answering), as the wizard does."""
    data = json_body(request, FIELDS)
    source = Source.objects.filter(pk=pk, engine="postgresql", protection__enabled=True).first()
    if source is None:
        return error(f"No source {pk} under continuous protection.", 404)
    target = data.get("target", PitrRestore.TIME)
    if target not in dict(PitrRestore.TARGET_CHOICES):
        raise BadRequest(f"target must be one of {', '.join(dict(PitrRestore.TARGET_CHOICES))}.")
    target_time = None
    if target == PitrRestore.TIME:
        if not isinstance(data.get("target_time"), str):
            raise BadRequest("target_time is required for target time: an ISO 8601 date-time.")
        target_time = datetime_param(data, "target_time")
    data_directory = text(data, "data_directory", 1000)
    if not data_directory:
        raise BadRequest("data_directory is required: a new or empty directory on the chosen host.")
    port = whole_number(data.get("port"))
    if port is None or not 1024 <= port <= 65535:
        raise BadRequest("port is required: a free port between 1024 and 65535 on the chosen host.")
    try:
        job = restores.request_pitr_restore(
            tokens.actor_label(request.api_token),
            source,
            target_kind=target,
            target_time=target_time,
            restore_point=text(data, "restore_point", 64),
            data_directory=data_directory,
            port=port,
            host=text(data, "host", 64) or None,
        )
    except Refused as exc:
        return error(str(exc), 409)
    job.refresh_from_db()  # a synchronous queue (tests) has already run it
    url = request.build_absolute_uri(reverse("api_pitr_restore", args=[job.pk]))
    response = JsonResponse(restore_detail(request, job), status=202)
    response["Location"] = url
    return response


@authorize("read", "pitr_restore_detail")
def pitr_restore(request: ApiRequest, pk: int) -> JsonResponse:
    """A point-in-time restore's progress and outcome, and how to connect once it runs."""
    job = PitrRestore.objects.select_related("source").filter(pk=pk).first() if pk <= MAX_ID else None
    if job is None:
        return error(f"No point-in-time restore with id {pk}.", 404)
    return JsonResponse(restore_detail(request, job))


pitr_restores_resource = by_method(POST=pitr_restore_start)
pitr_restore_resource = by_method(GET=pitr_restore)
