"""DR drill pages: all sources' drills for auditors, one source's drills with
its schedule, "Run now" and the manual-drill form for administrators."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from catalog.decorators import operator_required, viewer_required
from catalog.models import Source
from catalog.services import Refused
from catalog.views.common import AuthenticatedHttpRequest
from drills import schedule as drill_schedule
from drills import services
from drills.forms import ManualDrillForm, ScheduleForm
from drills.models import Drill


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    rows = [{"source": source, "kinds": drill_schedule.statuses_of(source)} for source in Source.objects.all()]
    drills = Drill.objects.select_related("source", "performed_by")[:100]
    return render(request, "drills/list.html", {"rows": rows, "drills": drills, "now": timezone.now()})


@viewer_required
def source_drills(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    return render_source(request, source)


def render_source(
    request: HttpRequest,
    source: Source,
    schedule_form: ScheduleForm | None = None,
    manual_form: ManualDrillForm | None = None,
) -> HttpResponse:
    schedule = drill_schedule.schedule_of(source)
    kinds = drill_schedule.statuses_of(source)
    ctx = {
        "source": source,
        "kinds": kinds,
        "any_active": any(status.active for status in kinds),
        "drills": source.drills.select_related("performed_by", "backup", "verification", "restore_job")[:100],
        "schedule_form": schedule_form or ScheduleForm(instance=schedule),
        "manual_form": manual_form
        or ManualDrillForm(initial={"performed_at": timezone.localtime().strftime("%Y-%m-%dT%H:%M")}),
        "now": timezone.now(),
        "rto_text": services.rto_text(source.rto_minutes),
    }
    return render(request, "drills/source.html", ctx, status=400 if schedule_form or manual_form else 200)


@operator_required
@require_POST
def run_now(request: AuthenticatedHttpRequest, pk: int, kind: str) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    try:
        drill = services.create_drill(request.user, source, kind)
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{drill.get_kind_display()} queued; it runs on a worker and appears below.")
    return redirect("drill_history", pk=source.pk)


@operator_required
@require_POST
def update_schedule(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    form = ScheduleForm(request.POST, instance=drill_schedule.schedule_of(source))
    if not form.is_valid():
        return render_source(request, source, schedule_form=form)
    if form.has_changed():
        services.update_schedule(request.user, form.save(commit=False), form.changed_data)
        messages.success(request, "Drill schedule saved.")
    return redirect("drill_history", pk=source.pk)


@operator_required
@require_POST
def record(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    form = ManualDrillForm(request.POST)
    if not form.is_valid():
        return render_source(request, source, manual_form=form)
    data = form.cleaned_data
    drill = services.record_manual_drill(
        request.user,
        source,
        kind=data["kind"],
        performed_at=data["performed_at"],
        minutes=data["minutes"],
        passed=data["outcome"] == "passed",
        notes=data["notes"],
    )
    messages.success(request, f"{drill.get_kind_display()} of {drill.performed_at:%Y-%m-%d} recorded.")
    return redirect("drill_history", pk=source.pk)
