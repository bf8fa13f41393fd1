"""The JSON API under /api/v1/. Views are short: parse, call the same
services the pages call, answer. Errors are {"error": "..."} with a 4xx code."""

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from django.core.exceptions import RequestDataTooBig
from django.db.models import OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.views.decorators.csrf import csrf_exempt

from catalog import backup_runs, queues, services, verification
from catalog.alerts.models import Alert
from catalog.api import serialize, tokens
from catalog.api.auth import ApiRequest, authorize, by_method, error
from catalog.api.openapi import openapi_document
from catalog.forms import MAX_KEEP_DAYS, RunBackupForm
from catalog.models import Backup, BackupPlan, Copy, Destination, Source, Verification

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_OFFSET = 10**9
MAX_ID = 2**63 - 1  # ids are bigints; a larger one can name nothing

P = ParamSpec("P")
RequestT = TypeVar("RequestT", bound=HttpRequest)


class BadRequest(Exception):
    """Bad input; str() is the message for the caller."""


# --- parsing ----------------------------------------------------------------


@overload
def int_param(params: QueryDict, name: str, default: int, minimum: int = 1, maximum: int = MAX_ID) -> int: ...
@overload
def int_param(
    params: QueryDict, name: str, default: None = None, minimum: int = 1, maximum: int = MAX_ID
) -> int | None: ...
def int_param(
    params: QueryDict, name: str, default: int | None = None, minimum: int = 1, maximum: int = MAX_ID
) -> int | None:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {text[:50]!r}.") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be between {minimum} and {maximum}.")
    return value


def datetime_param(params: Mapping[str, Any], name: str) -> datetime | None:
    """An ISO 8601 date-time (or a date, meaning its midnight) as an aware UTC datetime."""
    text = params.get(name)
    if text is None:
        return None
    # An unencoded "+01:00" in a query string arrives as " 01:00".
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text)
    try:
        value = parse_datetime(text)
        if value is None:
            day = parse_date(text)
            if day is not None:
                value = datetime.combine(day, time.min)
    except ValueError:
        value = None
    if value is None:
        raise BadRequest(f"{name} must be an ISO 8601 date-time such as 2026-01-31T03:00:00Z, not {text[:50]!r}.")
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999: the edge of time it is
        offset = value.utcoffset()
        assert offset is not None  # aware: made so above
        edge = datetime.min if offset > timedelta(0) else datetime.max
        return edge.replace(tzinfo=UTC)


def text_param(params: QueryDict, name: str, max_length: int = 100) -> str | None:
    text = params.get(name)
    if text is not None and len(text) > max_length:
        raise BadRequest(f"{name} must be at most {max_length} characters.")
    return text


def json_body(request: HttpRequest, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty object), with no
    member but `fields`: a misspelt "lable" must not pass unnoticed."""
    try:
        if not request.body.strip():
            return {}
        data = json.loads(request.body)
    except RequestDataTooBig:
        raise BadRequest("The request body is too large.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:  # [[[[…]]]] a few thousand deep: the parser's stack, not ours to grow
        raise BadRequest("The request body is nested too deeply; send a flat JSON object.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    if unknown := sorted(set(data) - set(fields)):
        raise BadRequest(f"Unknown member {unknown[0][:50]!r}; expected {', '.join(fields)}.")
    return data


def whole_number(value: Any) -> int | None:
    """An integer from JSON, where 3.0 is the number 3 too; None if it is not one."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def handles_bad_requests(
    view: Callable[Concatenate[RequestT, P], HttpResponse],
) -> Callable[Concatenate[RequestT, P], HttpResponse]:
    @wraps(view)
    def wrapped(request: RequestT, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error(str(exc), 400)

    return wrapped


# --- status -----------------------------------------------------------------


@authorize("read", "status")
def status_view(request: ApiRequest) -> JsonResponse:
    last_backup = Backup.objects.filter(source=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    last_verification = (
        Verification.objects.filter(source=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    )
    sources = list(
        Source.objects.annotate(last_backup_id=Subquery(last_backup), last_verification_id=Subquery(last_verification))
    )
    backups = Backup.objects.without_log().in_bulk([s.last_backup_id for s in sources if s.last_backup_id])
    verifications = Verification.objects.in_bulk([s.last_verification_id for s in sources if s.last_verification_id])
    destinations = Destination.objects.annotate(used=Sum("copies__size", filter=Q(copies__status=Copy.DURABLE)))
    alerts = Alert.objects.filter(resolved_at__isnull=True).select_related("source")
    return JsonResponse(
        {
            "status": serialize.overall_status(sources),
            "checked_at": timezone.now(),
            "open_alerts": [serialize.open_alert(request, alert) for alert in alerts],
            "sources": [
                serialize.source_health(s, backups.get(s.last_backup_id), verifications.get(s.last_verification_id))
                for s in sources
            ],
            "destinations": [serialize.destination_usage(d) for d in destinations],
        }
    )


# --- backups ----------------------------------------------------------------


BACKUP_FILTERS = ("source", "plan", "status", "label", "since", "until", "limit", "offset")


def filtered_backups(params: QueryDict) -> QuerySet[Backup]:
    # A misspelt filter would otherwise return every backup without a word.
    if unknown := sorted(set(params) - set(BACKUP_FILTERS)):
        raise BadRequest(f"Unknown parameter {unknown[0][:50]!r}; the filters are {', '.join(BACKUP_FILTERS)}.")
    backups = Backup.objects.select_related("source", "plan").without_log().order_by("-created_at", "-pk")
    if (source := int_param(params, "source")) is not None:
        backups = backups.filter(source_id=source)
    if (plan := int_param(params, "plan")) is not None:
        backups = backups.filter(plan_id=plan)
    if (status := params.get("status")) is not None:
        if status not in dict(Backup.STATUS_CHOICES):
            raise BadRequest(f"status must be one of {', '.join(dict(Backup.STATUS_CHOICES))}.")
        backups = backups.filter(status=status)
    if (label := text_param(params, "label")) is not None:
        # PostgreSQL cannot even compare a NUL character; no label holds one.
        backups = backups.filter(label=label) if "\x00" not in label else backups.none()
    if (since := datetime_param(params, "since")) is not None:
        backups = backups.filter(created_at__gte=since)
    if (until := datetime_param(params, "until")) is not None:
        backups = backups.filter(created_at__lt=until)
    return backups


def page_link(request: HttpRequest, offset: int, limit: int) -> str:
    query = request.GET.copy()
    query["offset"], query["limit"] = str(offset), str(limit)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


@authorize("read", "backup_list")
@handles_bad_requests
def backup_list(request: ApiRequest) -> JsonResponse:
    """Newest first, `limit` at a time from `offset`: two queries whatever the page size."""
    limit = int_param(request.GET, "limit", DEFAULT_LIMIT, maximum=MAX_LIMIT)
    offset = int_param(request.GET, "offset", 0, minimum=0, maximum=MAX_OFFSET)
    backups = filtered_backups(request.GET)
    count = backups.count()
    page = backups[offset : offset + limit]
    return JsonResponse(
        {
            "count": count,
            "limit": limit,
            "offset": offset,
            "next": page_link(request, offset + limit, limit) if offset + limit < count else None,
            "previous": page_link(request, max(offset - limit, 0), limit) if offset > 0 else None,
            "results": [serialize.backup_list_item(request, backup) for backup in page],
        }
    )


def find_backup(pk: int) -> Backup | None:
    return Backup.objects.select_related("source", "plan").defer("log").filter(pk=pk).first() if pk <= MAX_ID else None


@authorize("read", "backup_detail")
def backup_detail(request: ApiRequest, pk: int) -> JsonResponse:
    backup = find_backup(pk)
    if backup is None:
        return error(f"No backup with id {pk}.", 404)
    copies = backup.copies.select_related("destination")
    return JsonResponse(serialize.backup_detail(request, backup, copies))


def label_and_keep_days(data: Mapping[str, Any]) -> tuple[str, int | None]:
    """A manual backup's label and retention, checked as the Run form checks them."""
    label = data.get("label", "")
    if not isinstance(label, str):
        raise BadRequest("label must be a string.")
    keep_days = data.get("keep_days")
    if keep_days is not None and not 1 <= (keep_days := whole_number(keep_days) or 0) <= MAX_KEEP_DAYS:
        raise BadRequest(
            f"keep_days must be a whole number of days from 1 to {MAX_KEEP_DAYS}, or left out for "
            "the plan's rule for manual backups."
        )
    form = RunBackupForm({"label": label, "keep_days": keep_days})
    if not form.is_valid():
        raise BadRequest("label may use letters, digits, - and _ only, up to 100 characters.")
    return form.cleaned_data["label"], keep_days


def start_plan(request: ApiRequest, plan: BackupPlan, label: str, keep_days: int | None) -> Backup:
    """Queues a backup of `plan` as the token, with trigger "api" (Refused if it cannot start)."""
    token = request.api_token
    backup = backup_runs.start_backup(
        tokens.actor_label(token), plan, label=label, trigger="api", keep_days=keep_days, on_behalf_of=token.created_by
    )
    backup.refresh_from_db()  # a synchronous queue (tests) has already run it
    return backup


@authorize("backup", "backup_start")
@handles_bad_requests
def backup_start(request: ApiRequest) -> JsonResponse:
    """Queues a backup of a plan, as its page's Run button does, with trigger "api"."""
    data = json_body(request, ("plan", "label", "keep_days"))
    plan_id = whole_number(data.get("plan"))
    if plan_id is None:
        raise BadRequest("plan is required: the id of the plan to run, as a number.")
    label, keep_days = label_and_keep_days(data)
    plan = BackupPlan.objects.select_related("source").filter(pk=plan_id).first() if 0 < plan_id <= MAX_ID else None
    if plan is None:
        return error(f"No plan with id {plan_id}.", 404)
    try:
        backup = start_plan(request, plan, label, keep_days)
    except services.Refused as exc:
        return error(str(exc), 409)
    url = request.build_absolute_uri(reverse("api_backup", args=[backup.pk]))
    response = JsonResponse(
        {"id": backup.pk, "status": backup.status, "label": backup.label, "trigger": backup.trigger, "url": url},
        status=202,
    )
    response["Location"] = url
    return response


@authorize("backup", "backup_verify")
@handles_bad_requests
def backup_verify(request: ApiRequest, pk: int) -> JsonResponse:
    """Queues a checksum (default) or a restore test of one backup."""
    data = json_body(request, ("kind",))
    kind = data.get("kind", Verification.CHECKSUM)
    if not isinstance(kind, str) or kind not in dict(Verification.KIND_CHOICES):
        raise BadRequest(f"kind must be one of {', '.join(dict(Verification.KIND_CHOICES))}.")
    backup = find_backup(pk)
    if backup is None:
        return error(f"No backup with id {pk}.", 404)
    try:
        job = verification.create_verification(tokens.actor_label(request.api_token), backup, kind, trigger="api")
    except services.Refused as exc:
        return error(str(exc), 409)
    job.refresh_from_db()
    return JsonResponse(serialize.verification_detail(request, job), status=202)


# --- hosts ------------------------------------------------------------------


@authorize("read", "host_list")
def host_list(request: ApiRequest) -> JsonResponse:
    """The hosts whose workers beat lately, with their queues: where a
    point-in-time restore can go (those whose own queue is alive)."""
    by_host: dict[str, list[Any]] = {}
    for beat in queues.alive_heartbeats():
        by_host.setdefault(beat.host, []).append(beat)
    own = set(queues.hosts_with_own_queue())
    return JsonResponse(
        {
            "hosts": [
                {
                    "host": host,
                    "queues": [beat.queue for beat in beats],
                    "last_seen": max(beat.last_seen for beat in beats),
                    "takes_host_bound_work": host in own,
                }
                for host, beats in sorted(by_host.items())
            ]
        }
    )


# --- the rest ---------------------------------------------------------------


def openapi_json(request: HttpRequest) -> JsonResponse:
    """Public, like any API's documentation: it holds no data."""
    return JsonResponse(openapi_document())


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    return error(f"There is no API endpoint at {request.path}; see /api/v1/openapi.json.", 404)


# What each URL answers, by method (catalog/api/urls.py).
status_resource = by_method(GET=status_view)
backups_resource = by_method(GET=backup_list, POST=backup_start)
backup_resource = by_method(GET=backup_detail)
verify_resource = by_method(POST=backup_verify)
openapi_resource = by_method(GET=openapi_json)
hosts_resource = by_method(GET=host_list)
