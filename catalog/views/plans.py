"""Backup plans: schedule, format, destinations and retention; run one now."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from catalog import backup_runs, charts, lifecycle, services
from catalog.decorators import operator_required, viewer_required
from catalog.forms import PlanForm, RetentionForm, RunBackupForm, SchedulePreviewForm
from catalog.models import FORMATS_BY_ENGINE, BackupPlan, Source
from catalog.schedules import describe, next_runs
from catalog.views.common import chosen, delete_config, edit_config, next_url


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    plans = BackupPlan.objects.select_related("source").prefetch_related("destinations")
    return render(request, "catalog/plan_list.html", {"plans": plans})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(BackupPlan.objects.select_related("source"), pk=pk)
    rows = lifecycle.preview(plan)
    backups = plan.backups.for_rows()[:10]
    ctx = {
        "plan": plan,
        "backups": backups,
        "run_form": RunBackupForm(),
        "rows": rows,
        "tally": lifecycle.tally(rows),
        "charts": charts.plan_charts(plan),
    }
    return render(request, "catalog/plan_detail.html", ctx)


@operator_required
@require_POST
def retention_preview(request: HttpRequest) -> HttpResponse:
    """What the retention rule now in the plan form would do (htmx, nothing is changed)."""
    plan = chosen(BackupPlan.objects, request.POST.get("plan_id")) or BackupPlan()
    form = RetentionForm(request.POST, instance=plan)
    if not form.is_valid():
        return render(request, "catalog/partials/retention_preview.html", {"invalid": True})
    policy = form.save(commit=False).retention_policy()
    rows = lifecycle.preview(plan, policy) if plan.pk else []
    ctx = {"rows": rows, "tally": lifecycle.tally(rows), "policy": policy}
    return render(request, "catalog/partials/retention_preview.html", ctx)


@operator_required
@require_POST
def prune(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(BackupPlan, pk=pk)
    report = lifecycle.prune_plan_checked(request.user, plan)
    level = messages.error if report.errors or report.failure else messages.success
    level(request, f"Retention applied: {report.summary()}.")
    return redirect(plan)


@operator_required
def new(request: HttpRequest) -> HttpResponse:
    initial_source = chosen(Source.objects, request.GET.get("source"))
    plan = BackupPlan(source=initial_source) if initial_source else BackupPlan()
    if initial_source and plan.format not in FORMATS_BY_ENGINE[initial_source.engine]:
        plan.format = FORMATS_BY_ENGINE[initial_source.engine][0]  # SQLite's file, MariaDB's dump
    return edit_config(request, PlanForm, plan, services.save_plan, "catalog/plan_form.html")


@operator_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(BackupPlan, pk=pk)
    return edit_config(request, PlanForm, plan, services.save_plan, "catalog/plan_form.html")


@operator_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    return delete_config(request, get_object_or_404(BackupPlan, pk=pk), services.delete_plan, "plan_list")


@viewer_required
@require_GET
def cron_preview(request: HttpRequest) -> HttpResponse:
    """The schedule now in the plan form, preset or cron, in words with its next runs (htmx)."""
    form = SchedulePreviewForm(request.GET)
    if not form.is_valid():
        errors = [str(error) for field_errors in form.errors.values() for error in field_errors]
        return render(request, "catalog/partials/cron_preview.html", {"error": " ".join(errors)})
    schedule = form.cleaned_data["schedule"]
    ctx = {"schedule": schedule, "words": describe(schedule), "runs": next_runs(schedule, 5)}
    return render(request, "catalog/partials/cron_preview.html", ctx)


@operator_required
@require_POST
def run(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(BackupPlan, pk=pk)
    form = RunBackupForm(request.POST)
    if not form.is_valid():
        if "keep_days" in form.errors:
            messages.error(
                request,
                "Keep it for a whole number of days, from 1 to 36500, or leave it empty for "
                f"the plan's rule ({plan.retention_policy().describe_manual()}).",
            )
        else:
            typed = request.POST.get("label", "")[:100]
            messages.error(
                request,
                f"“{typed}” cannot be a label: use letters, digits, - and _ only (no spaces), e.g. pre-migration.",
            )
        # Back to the page the form was on, its boxes holding what was typed (run_form.html).
        url = next_url(request, plan.get_absolute_url())
        boxes: dict[str, int | str] = {
            "run_plan": plan.pk,
            "label": request.POST.get("label", "")[:100],
            "keep_days": request.POST.get("keep_days", "")[:10],
        }
        typed = urlencode(boxes)
        return HttpResponseRedirect(f"{url}{'&' if '?' in url else '?'}{typed}")
    try:
        backup = backup_runs.start_backup(
            request.user, plan, label=form.cleaned_data["label"], keep_days=form.cleaned_data["keep_days"]
        )
    except services.Refused as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(next_url(request, plan.get_absolute_url()))
    return redirect(backup)
