"""Audit trail pages: read, filter, verify the hash chain, export. Everyone
who can read may use them; nothing here changes anything (GET only)."""

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from catalog import audit, spreadsheets
from catalog.decorators import viewer_required
from catalog.models import AuditEvent
from catalog.views.common import HtmxHttpRequest, page_of


def distinct_values(field: str) -> list[str]:
    return list(AuditEvent.objects.order_by(field).values_list(field, flat=True).distinct())


class AuditFilterForm(forms.Form):
    actor = forms.ChoiceField(required=False)
    action = forms.ChoiceField(required=False)
    object_type = forms.ChoiceField(label="Object type", required=False)
    object = forms.CharField(label="Object name or id", required=False)
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To (inclusive)", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One query each, whatever the page shows.
        cast(forms.ChoiceField, self.fields["actor"]).choices = [("", "Anyone")] + [
            (v, v) for v in distinct_values("actor_label")
        ]
        cast(forms.ChoiceField, self.fields["action"]).choices = [("", "Any action")] + [
            (v, v) for v in distinct_values("action")
        ]
        types = [v for v in distinct_values("object_type") if v]
        cast(forms.ChoiceField, self.fields["object_type"]).choices = [("", "Any type")] + [
            (v, audit.object_type_label(v)) for v in types
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            raise forms.ValidationError("“From” is after “To”: no event can match.")
        return cleaned

    def apply(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if not self.is_bound:
            return events
        if not self.is_valid():
            return events.none()  # the errors say why; never "everything" by mistake
        data = self.cleaned_data
        if data["actor"]:
            events = events.filter(actor_label=data["actor"])
        if data["action"]:
            events = events.filter(action=data["action"])
        if data["object_type"]:
            events = events.filter(object_type=data["object_type"])
        if data["object"]:
            text = data["object"].strip()
            events = events.filter(object_repr__icontains=text) | events.filter(object_id=text)
        if data["since"]:
            events = events.filter(created_at__date__gte=data["since"])
        if data["until"]:
            events = events.filter(created_at__date__lte=data["until"])
        return events


def filtered_events(request: HttpRequest) -> tuple[AuditFilterForm, QuerySet[AuditEvent]]:
    filters = AuditFilterForm(request.GET or None)
    return filters, filters.apply(AuditEvent.objects.all())


@viewer_required
@require_GET
def listing(request: HtmxHttpRequest) -> HttpResponse:
    filters, events = filtered_events(request)
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"filters": filters, "page": page_of(request, events), "query": query.urlencode()}
    if request.htmx and request.htmx.target == "audit-results":
        return render(request, "catalog/partials/audit_results.html", ctx)
    return render(request, "catalog/audit_list.html", ctx)


@viewer_required
@require_GET
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    event = get_object_or_404(AuditEvent, pk=pk)
    neighbours = AuditEvent.objects.order_by("id")
    ctx = {
        "event": event,
        "previous": neighbours.filter(id__lt=pk).last(),
        "next": neighbours.filter(id__gt=pk).first(),
    }
    return render(request, "catalog/audit_detail.html", ctx)


@viewer_required
@require_GET
def verify(request: HtmxHttpRequest) -> HttpResponse:
    """Walk the whole chain. Read-only, so auditors may run it."""
    result = audit.verify_chain()
    template = "catalog/partials/audit_verify_result.html" if request.htmx else "catalog/audit_verify.html"
    return render(request, template, {"result": result, "checked_at": timezone.now()})


# --- exports -------------------------------------------------------------------

EXPORT_COLUMNS = ["id", *audit.HASHED_FIELDS, "prev_hash", "hash"]


class Echo:
    """The CSV writer writes into this and we stream what it returns."""

    def write(self, value: str) -> str:
        return value


def export_rows(events: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    """The filtered events in chain order, one at a time."""
    for event in events.order_by("id").iterator(chunk_size=2000):
        yield audit.export_row(event)


def export(
    request: HttpRequest,
    lines: Callable[[Iterator[dict[str, Any]]], Iterator[str]],
    content_type: str,
    extension: str,
) -> HttpResponseBase:
    filters, events = filtered_events(request)
    if filters.is_bound and not filters.is_valid():
        errors = "; ".join(
            f"{'dates' if name == '__all__' else name}: {' '.join(str(text) for text in messages)}"
            for name, messages in filters.errors.items()
        )
        message = f"Nothing exported, the filters are not valid ({errors})"
        return HttpResponseBadRequest(message, content_type="text/plain")
    response = StreamingHttpResponse(lines(export_rows(events)), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.{extension}"'
    return response


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    # Cells a spreadsheet would run as formulas get a ' in front (catalog/spreadsheets.py).
    writer = spreadsheets.writer(Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        changes = json.dumps(row["changes"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        yield writer.writerow([changes if name == "changes" else row[name] for name in EXPORT_COLUMNS])


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


@viewer_required
@require_GET
def export_csv(request: HttpRequest) -> HttpResponseBase:
    return export(request, csv_lines, "text/csv; charset=utf-8", "csv")


@viewer_required
@require_GET
def export_jsonl(request: HttpRequest) -> HttpResponseBase:
    return export(request, jsonl_lines, "application/jsonl; charset=utf-8", "jsonl")
