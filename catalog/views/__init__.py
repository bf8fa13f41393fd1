"""Browser pages. Views stay short: forms validate, services act."""

from collections import Counter, defaultdict
from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, F, Max, OuterRef, Subquery, Sum
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_POST

from catalog import charts, lifecycle, orphans, queues, services
from catalog.decorators import operator_required, viewer_required
from catalog.engine.errors import EngineError
from catalog.forms import (
    BackupFilterForm,
    DestinationForm,
    PinForm,
    PlanForm,
    RetentionForm,
    RunBackupForm,
    SchedulePreviewForm,
    SourceForm,
)
from catalog.models import (
    HEALTH_CHOICES,
    Alert,
    Backup,
    BackupPlan,
    Copy,
    Destination,
    Source,
    StatusChange,
    Verification,
)
from catalog.schedules import describe, next_runs

PAGE_SIZE = 25


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


def page_of(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def chosen(queryset, value):
    """The row a form field or query string names by id, or None when it names
    none: missing, or not an id at all (a hand-edited URL), which the ORM
    would otherwise raise on."""
    value = str(value or "").strip()
    return queryset.filter(pk=value).first() if value.isdecimal() else None


def next_url(request, default):
    """Where a form asks to go back to: a path on this site only, never
    another site (an open redirect) nor something that is no URL at all."""
    url = request.POST.get("next", "")
    if url.startswith("/") and url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()):
        return url
    return default


def edit_config(request, form_class, instance, save, template, **context):
    """Create/edit page shared by sources, destinations and plans."""
    form = form_class(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        obj = form.save(commit=False)
        kwargs = {"changed_fields": form.changed_fields()}
        if hasattr(form, "secrets"):
            kwargs["secrets"] = form.secrets()
        if "destinations" in form.cleaned_data:
            kwargs["destinations"] = form.cleaned_data["destinations"]
        save(request.user, obj, **kwargs)
        messages.success(request, f"Saved {obj}.")
        return redirect(obj)
    return render(request, template, {"form": form, "object": instance, **context})


def delete_config(request, instance, delete, back):
    if request.method == "POST":
        try:
            delete(request.user, instance)
        except services.Refused as exc:
            messages.error(request, str(exc))
            return redirect(instance)
        messages.success(request, f"Deleted {instance}.")
        return redirect(back)
    return render(request, "catalog/confirm_delete.html", {"object": instance, "kind": instance._meta.verbose_name})


# --- dashboard -------------------------------------------------------------


@viewer_required
def dashboard(request):
    """Are we safe? Each source's health, its last good backup against its RPO
    and its last verified restore against its RTO; then running jobs, next
    runs, storage and recent backups. A fixed number of queries, however many
    backups there are."""
    sources = list(Source.objects.prefetch_related("plans").annotate(
        last_backup_id=Subquery(Backup.objects.filter(source=OuterRef("pk")).order_by("-created_at").values("pk")[:1]),
        last_restore_id=Subquery(Verification.objects.filter(source=OuterRef("pk"), kind="restore", status="passed")
                                 .order_by(F("finished_at").desc(nulls_last=True)).values("pk")[:1]),
    ))
    ctx = {
        "rows": dashboard_rows(sources, timezone.now()),
        "verdict": Counter(source.status for source in sources),
        "open_alerts": Alert.objects.filter(resolved_at__isnull=True).count(),
        "monitor_silent_since": queues.monitor_silent_since(),
        "next_runs": next_scheduled_runs(sources, 8),
        "active": Backup.objects.active().select_related("source", "plan").without_log(),
        "recent": Backup.objects.for_rows()[:10],
        "storage": storage_usage(),
        "has_destinations": Destination.objects.exists(),
        "has_plans": BackupPlan.objects.exists(),
    }
    return render(request, "catalog/dashboard.html", ctx)


def storage_usage():
    """Every destination's usage from one grouped sum over the copies, not
    one scan of the copies per destination."""
    used = dict(Copy.objects.filter(status=Copy.DURABLE).order_by().values_list("destination")
                .annotate(total=Sum("size")).values_list("destination", "total"))
    return [{"destination": d, "usage": d.usage(used.get(d.pk) or 0)} for d in Destination.objects.all()]


HEALTH_STRIP_DAYS = 7  # how far back the dashboard draws each source's health


def dashboard_rows(sources, now):
    """One row per source, from what `dashboard` annotated: three queries in all."""
    last_ids = [s.last_backup_id for s in sources if s.last_backup_id]
    backups = Backup.objects.without_log().in_bulk(last_ids)
    restores = Verification.objects.in_bulk([s.last_restore_id for s in sources if s.last_restore_id])
    window = now - timedelta(days=HEALTH_STRIP_DAYS)
    changes = defaultdict(list)
    for change in StatusChange.objects.filter(created_at__gte=window).order_by("created_at", "id"):
        changes[change.source_id].append(change)
    labels = dict(HEALTH_CHOICES)
    rows = []
    for source in sources:
        restore = restores.get(source.last_restore_id)
        segments = charts.health_segments(changes[source.pk], source.status, max(window, source.created_at), now)
        last_good_at = source.last_good_at
        age = (now - last_good_at).total_seconds() if last_good_at else None
        rpo = source.rpo_minutes * 60 if source.rpo_minutes else None
        rows.append({
            "source": source, "last": backups.get(source.last_backup_id), "restore": restore,
            "last_good_at": last_good_at, "good_age": charts.span_text(age) if age is not None else "",
            "rpo": charts.span_text(rpo) if rpo else "", "rpo_breached": bool(rpo and age is not None and age > rpo),
            "restore_overdue": source.restore_test_overdue(restore, has_good_backup=last_good_at is not None, now=now),
            "slower_than_rto": source.restore_slower_than_rto(restore),
            "status_for": charts.span_text((now - source.status_since).total_seconds()) if source.status_since else "",
            "late_in": charts.span_until(source.late_at, now), "down_in": charts.span_until(source.down_at, now),
            # Up and on time, the reason would only repeat the last good backup beside it and the deadlines below.
            "says_reason": not (source.status == "up" and source.late_at and source.late_at > now),
            "health_strip": charts.health_strip(segments, labels, frame=(window, now)),
        })
    return rows


def next_scheduled_runs(sources, count):
    """The next `count` runs of all enabled plans, soonest first."""
    runs = [{"at": at, "plan": plan, "source": source}
            for source in sources for plan in source.plans.all() if plan.enabled for at in plan.next_runs(1)]
    return sorted(runs, key=lambda run: run["at"])[:count]


# --- sources ---------------------------------------------------------------


@viewer_required
def source_list(request):
    sources = Source.objects.annotate(backup_count=Count("backups"), last_at=Max("backups__created_at"))
    return render(request, "catalog/source_list.html", {"sources": sources})


@viewer_required
def source_detail(request, pk):
    source = get_object_or_404(Source, pk=pk)
    ctx = {
        "source": source,
        "plans": source.plans.prefetch_related("destinations"),
        "backups": source.backups.for_rows()[:10],
        "run_form": RunBackupForm(),
    }
    return render(request, "catalog/source_detail.html", ctx)


@operator_required
def source_new(request):
    return edit_config(request, SourceForm, Source(), services.save_source, "catalog/source_form.html")


@operator_required
def source_edit(request, pk):
    source = get_object_or_404(Source, pk=pk)
    return edit_config(request, SourceForm, source, services.save_source, "catalog/source_form.html")


@operator_required
def source_delete(request, pk):
    return delete_config(request, get_object_or_404(Source, pk=pk), services.delete_source, "source_list")


@operator_required
@require_POST
def source_test(request):
    """Tests the connection with the values now in the form (htmx)."""
    return test_config(request, Source, SourceForm, "source_id", services.test_source)


# --- destinations ----------------------------------------------------------


@viewer_required
def destination_list(request):
    destinations = Destination.objects.annotate(copy_count=Count("copies"))
    return render(request, "catalog/destination_list.html", {"destinations": destinations})


@viewer_required
def destination_detail(request, pk):
    destination = get_object_or_404(Destination, pk=pk)
    copies = destination.copies.select_related("backup", "backup__source").order_by("-backup__created_at")[:20]
    ctx = {"destination": destination, "plans": destination.plans.all(), "copies": copies, "usage": destination.usage()}
    return render(request, "catalog/destination_detail.html", ctx)


@operator_required
@require_POST
def destination_scan(request, pk):
    """Lists what the destination holds that the catalog does not know (htmx)."""
    destination = get_object_or_404(Destination, pk=pk)
    try:
        found, error = orphans.scan(destination), ""
    except EngineError as exc:
        found, error = [], str(exc)
    ctx = {"destination": destination, "orphans": found, "error": error}
    return render(request, "catalog/partials/orphans.html", ctx)


@operator_required
@require_POST
def destination_remove_orphans(request, pk):
    destination = get_object_or_404(Destination, pk=pk)
    tokens = request.POST.getlist("orphan")
    if not tokens:
        messages.error(request, "Pick the items to remove first.")
        return redirect(destination)
    try:
        removed, errors = orphans.remove(request.user, destination, tokens)
    except EngineError as exc:
        removed, errors = [], [str(exc)]
    if removed:
        messages.success(request, f"Removed {len(removed)} item{'s' if len(removed) != 1 else ''} from {destination}.")
    for error in errors:
        messages.error(request, f"Not removed: {error}")
    return redirect(destination)


@operator_required
def destination_new(request):
    return edit_config(request, DestinationForm, Destination(), services.save_destination, "catalog/destination_form.html")


@operator_required
def destination_edit(request, pk):
    destination = get_object_or_404(Destination, pk=pk)
    return edit_config(request, DestinationForm, destination, services.save_destination, "catalog/destination_form.html")


@operator_required
def destination_delete(request, pk):
    destination = get_object_or_404(Destination, pk=pk)
    return delete_config(request, destination, services.delete_destination, "destination_list")


@operator_required
@require_POST
def destination_test(request):
    """Writes, reads and deletes a probe object with the form's values (htmx)."""
    return test_config(request, Destination, DestinationForm, "destination_id", services.test_destination)


def form_errors_in_words(form):
    """E.g. "Host: Required unless you give a connection string. Port: …", for
    an answer that stands alone (a Test button's: the form is not shown again)."""
    said = [f"{form[name].label if name in form.fields else 'The form'}: {' '.join(errors)}"
            for name, errors in form.errors.items()]
    return " ".join(text if text.endswith(".") else text + "." for text in said)


def test_config(request, model, form_class, id_field, test):
    """Runs `test` on the unsaved form values; stored secrets fill blank fields."""
    instance = chosen(model.objects, request.POST.get(id_field)) or model()
    form = form_class(request.POST, instance=instance)
    if not form.is_valid():
        ok, message = False, "Not tried yet: " + form_errors_in_words(form)
    else:
        ok, message = test(form.save(commit=False), secrets=form.secrets())
    return render(request, "catalog/partials/test_result.html", {"ok": ok, "message": message})


# --- plans -----------------------------------------------------------------


@viewer_required
def plan_list(request):
    plans = BackupPlan.objects.select_related("source").prefetch_related("destinations")
    return render(request, "catalog/plan_list.html", {"plans": plans})


@viewer_required
def plan_detail(request, pk):
    plan = get_object_or_404(BackupPlan.objects.select_related("source"), pk=pk)
    rows = lifecycle.preview(plan)
    backups = plan.backups.for_rows()[:10]
    ctx = {"plan": plan, "backups": backups, "run_form": RunBackupForm(),
           "rows": rows, "tally": lifecycle.tally(rows), "charts": charts.plan_charts(plan)}
    return render(request, "catalog/plan_detail.html", ctx)


@operator_required
@require_POST
def retention_preview(request):
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
def plan_prune(request, pk):
    plan = get_object_or_404(BackupPlan, pk=pk)
    report = lifecycle.prune_plan_checked(request.user, plan)
    level = messages.error if report.errors or report.failure else messages.success
    level(request, f"Retention applied: {report.summary()}.")
    return redirect(plan)


@operator_required
def plan_new(request):
    initial_source = chosen(Source.objects, request.GET.get("source"))
    plan = BackupPlan(source=initial_source) if initial_source else BackupPlan()
    if initial_source and initial_source.engine == "sqlite":
        plan.format = "sqlite"
    return edit_config(request, PlanForm, plan, services.save_plan, "catalog/plan_form.html")


@operator_required
def plan_edit(request, pk):
    plan = get_object_or_404(BackupPlan, pk=pk)
    return edit_config(request, PlanForm, plan, services.save_plan, "catalog/plan_form.html")


@operator_required
def plan_delete(request, pk):
    return delete_config(request, get_object_or_404(BackupPlan, pk=pk), services.delete_plan, "plan_list")


@viewer_required
@require_GET
def cron_preview(request):
    """The schedule now in the plan form, preset or cron, in words with its next runs (htmx)."""
    form = SchedulePreviewForm(request.GET)
    if not form.is_valid():
        errors = [error for field_errors in form.errors.values() for error in field_errors]
        return render(request, "catalog/partials/cron_preview.html", {"error": " ".join(errors)})
    schedule = form.cleaned_data["schedule"]
    ctx = {"schedule": schedule, "words": describe(schedule), "runs": next_runs(schedule, 5)}
    return render(request, "catalog/partials/cron_preview.html", ctx)


@operator_required
@require_POST
def plan_run(request, pk):
    plan = get_object_or_404(BackupPlan, pk=pk)
    form = RunBackupForm(request.POST)
    if not form.is_valid():
        if "keep_days" in form.errors:
            messages.error(request, "Keep it for a whole number of days, from 1 to 36500, or leave it empty for "
                                    f"the plan's rule ({plan.retention_policy().describe_manual()}).")
        else:
            typed = request.POST.get("label", "")[:100]
            messages.error(request, f"“{typed}” cannot be a label: use letters, digits, - and _ only "
                                    "(no spaces), e.g. pre-migration.")
        # Back to the page the form was on, its boxes holding what was typed (run_form.html).
        url = next_url(request, plan.get_absolute_url())
        typed = urlencode({"run_plan": plan.pk, "label": request.POST.get("label", "")[:100],
                           "keep_days": request.POST.get("keep_days", "")[:10]})
        return HttpResponseRedirect(f"{url}{'&' if '?' in url else '?'}{typed}")
    try:
        backup = services.start_backup(request.user, plan, label=form.cleaned_data["label"],
                                       keep_days=form.cleaned_data["keep_days"])
    except services.Refused as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(next_url(request, plan.get_absolute_url()))
    return redirect(backup)


# --- backups ---------------------------------------------------------------


@viewer_required
def backup_list(request):
    filters = BackupFilterForm(request.GET or None)
    backups = filters.apply(Backup.objects.for_rows())
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"filters": filters, "page": page_of(request, backups), "query": query.urlencode()}
    return render(request, "catalog/backup_list.html", ctx)


@viewer_required
def backup_detail(request, pk):
    backup = get_object_or_404(Backup.objects.select_related("source", "plan", "triggered_by"), pk=pk)
    ctx = {"backup": backup, "copies": backup.copies.select_related("destination"), "pin_form": PinForm(),
           "verifications": backup.verifications.select_related("triggered_by")}
    return render(request, "catalog/backup_detail.html", ctx)


@operator_required
@require_POST
def backup_pin(request, pk):
    backup = get_object_or_404(Backup, pk=pk)
    form = PinForm(request.POST)
    try:
        if not form.is_valid():
            raise services.Refused("Say why this backup must be kept.")
        not_stored = lifecycle.pin_backup(request.user, backup, form.cleaned_data["reason"],
                                          form.cleaned_data["legal_hold"])
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{backup} is kept until it is unpinned.")
        warn_hold_not_stored(request, not_stored)
    return redirect(backup)


def warn_hold_not_stored(request, failures):
    if failures:
        messages.warning(request, "The catalog has the change, but these destinations could not record it, so a "
                                  "catalog rebuilt from them would not know it (pin or release it again to retry): "
                                  + "; ".join(failures))


@operator_required
@require_POST
def backup_unpin(request, pk):
    backup = get_object_or_404(Backup, pk=pk)
    not_stored = lifecycle.unpin_backup(request.user, backup)
    messages.success(request, f"{backup} is no longer pinned; its plan's retention rule applies again.")
    warn_hold_not_stored(request, not_stored)
    return redirect(backup)


@viewer_required
def backup_progress(request, pk):
    """Polled by htmx every second while a backup is active: kept cheap (its
    log, which grows as it runs, stays in the database)."""
    backup = get_object_or_404(Backup.objects.without_log(), pk=pk)
    return job_progress(request, backup, "catalog/partials/backup_progress.html", {"backup": backup})


def job_progress(request, job, template, context):
    """A polled progress partial; once the job is over, the whole page reloads
    to show its final state (sizes, evidence, report)."""
    response = render(request, template, context)
    if not job.is_active() and request.htmx:
        response["HX-Refresh"] = "true"
    return response


@operator_required
@require_POST
def backup_cancel(request, pk):
    backup = get_object_or_404(Backup, pk=pk)
    try:
        services.cancel_backup(request.user, backup)
        messages.success(request, "Cancel requested: the backup stops within seconds and its partial data is removed.")
    except services.Refused as exc:
        messages.error(request, str(exc))
    return redirect(backup)
