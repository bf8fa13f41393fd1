"""Continuous protection pages: its health on the source page (an htmx
partial), enabling and disabling it, and the endpoint an archive_command
pushes WAL files to. Views stay short: forms validate, pitr.wal acts."""

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.api.auth import authorize, by_method, error
from catalog.decorators import operator_required, viewer_required
from catalog.engine import wal as walfiles
from catalog.engine.errors import EngineError
from catalog.models import Destination, Source
from catalog.services import Refused
from pitr import wal
from pitr.models import ContinuousProtection

# One segment, with room for the largest wal_segment_size (1 GB) pushed by an archive_command.
MAX_PUSH_BYTES = 1 << 30


class ProtectionForm(forms.Form):
    mode = forms.ChoiceField(
        choices=ContinuousProtection.MODE_CHOICES, widget=forms.RadioSelect, initial=ContinuousProtection.STREAM
    )
    destinations = forms.ModelMultipleChoiceField(
        queryset=Destination.objects.all(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Where WAL is kept: every segment goes to each of them.",
    )
    recovery_window_days = forms.IntegerField(
        label="Recovery window (days)",
        min_value=1,
        max_value=3650,
        initial=14,
        help_text="Any moment this far back can be restored; older WAL is pruned unless a kept base backup needs it.",
    )


def protection_context(source: Source) -> dict[str, Any]:
    protection = ContinuousProtection.objects.filter(source=source).prefetch_related("destinations").first()
    ctx: dict[str, Any] = {"source": source, "protection": protection}
    if protection is not None:
        ctx.update(
            running=wal.receiver_running(protection),
            rpo_text=wal.age_text(protection.last_segment_at),
            continuity=wal.continuity(source),
            sizes=wal.archive_size_per_day(source),
            archive_command=wal.archive_command(source) if protection.mode == ContinuousProtection.ARCHIVE else "",
        )
    return ctx


@viewer_required
def protection_panel(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    return render(request, "pitr/partials/protection.html", protection_context(source))


@operator_required
def protection_enable(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)  # a SQLite source is told it needs PostgreSQL
    protection = ContinuousProtection.objects.filter(source=source).first()
    initial = {
        "destinations": list(wal.default_destinations(source)),
        "recovery_window_days": protection.recovery_window_days if protection else 14,
    }
    form = ProtectionForm(request.POST or None, initial=initial)
    report = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if "check" in request.POST:
            report = wal.check_prerequisites(source, data["mode"])
        else:
            try:
                wal.enable_protection(
                    request.user, source, data["mode"], data["destinations"], data["recovery_window_days"]
                )
            except Refused as exc:
                report = ContinuousProtection.objects.get(source=source).check_report
                missing = bool(report and report.get("missing"))
                form.add_error(
                    None,
                    "Continuous protection cannot be enabled yet: see what is missing below." if missing else str(exc),
                )
            else:
                messages.success(request, f"Continuous protection of {source} is on.")
                return redirect(source.get_absolute_url() + "#protection")
    ctx = {
        "source": source,
        "form": form,
        "report": report,
        "slot": wal.slot_name_for(source),
        "archive_command": wal.archive_command(source),
    }
    return render(request, "pitr/protection_enable.html", ctx)


@operator_required
@require_POST
def protection_disable(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    get_object_or_404(ContinuousProtection, source=source, enabled=True)
    wal.disable_protection(request.user, source)
    messages.success(
        request, f"Continuous protection of {source} is off; the WAL already stored is kept until retention removes it."
    )
    return redirect(source.get_absolute_url() + "#protection")


@authorize("backup", "wal_push")
def wal_push(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    """PUT a WAL file (the body) as the server's archive_command does. 201
    when stored, 200 when it was stored before (archive_command may retry)."""
    protection = (
        ContinuousProtection.objects.filter(source_id=pk, enabled=True, mode=ContinuousProtection.ARCHIVE)
        .select_related("source")
        .first()
    )
    if protection is None:
        return error(f"Source {pk} has no continuous protection in archive mode.", 404)
    if walfiles.kind_of(name) not in ("segment", "history"):
        return error(f"{name} is not a WAL segment or timeline history file name.", 400)
    if wal.is_stored(protection.source, name):
        return JsonResponse({"name": name, "stored": True, "created": False})
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if not 0 < length <= MAX_PUSH_BYTES:
        return error("Send the WAL file as the request body (e.g. curl -T %p).", 400)
    try:
        segment = wal.ship_pushed_file(protection, name, request, length)
    except EngineError as exc:
        return error(f"{name} could not be stored: {exc}", 503)
    return JsonResponse({"name": name, "stored": True, "created": True, "sha256": segment.sha256}, status=201)


wal_push_resource = by_method(PUT=wal_push, POST=wal_push)
