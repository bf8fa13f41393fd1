"""Backups: the list with its filters, one backup's page, pin and unpin,
live progress, cancel."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog import backup_runs, lifecycle, services
from catalog.decorators import operator_required, viewer_required
from catalog.forms import BackupFilterForm, PinForm
from catalog.models import Backup
from catalog.views.common import HtmxHttpRequest, job_progress, page_of


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    filters = BackupFilterForm(request.GET or None)
    backups = filters.apply(Backup.objects.for_rows())
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"filters": filters, "page": page_of(request, backups), "query": query.urlencode()}
    return render(request, "catalog/backup_list.html", ctx)


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    backup = get_object_or_404(Backup.objects.select_related("source", "plan", "triggered_by"), pk=pk)
    ctx = {
        "backup": backup,
        "copies": backup.copies.select_related("destination"),
        "pin_form": PinForm(),
        "verifications": backup.verifications.select_related("triggered_by"),
    }
    return render(request, "catalog/backup_detail.html", ctx)


@operator_required
@require_POST
def pin(request: HttpRequest, pk: int) -> HttpResponse:
    backup = get_object_or_404(Backup, pk=pk)
    form = PinForm(request.POST)
    try:
        if not form.is_valid():
            raise services.Refused("Say why this backup must be kept.")
        not_stored = lifecycle.pin_backup(
            request.user, backup, form.cleaned_data["reason"], form.cleaned_data["legal_hold"]
        )
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{backup} is kept until it is unpinned.")
        warn_hold_not_stored(request, not_stored)
    return redirect(backup)


def warn_hold_not_stored(request: HttpRequest, failures: list[str]) -> None:
    if failures:
        messages.warning(
            request,
            "The catalog has the change, but these destinations could not record it, so a "
            "catalog rebuilt from them would not know it (pin or release it again to retry): " + "; ".join(failures),
        )


@operator_required
@require_POST
def unpin(request: HttpRequest, pk: int) -> HttpResponse:
    backup = get_object_or_404(Backup, pk=pk)
    not_stored = lifecycle.unpin_backup(request.user, backup)
    messages.success(request, f"{backup} is no longer pinned; its plan's retention rule applies again.")
    warn_hold_not_stored(request, not_stored)
    return redirect(backup)


@viewer_required
def progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Polled by htmx every second while a backup is active: kept cheap (its
    log, which grows as it runs, stays in the database)."""
    backup = get_object_or_404(Backup.objects.without_log(), pk=pk)
    return job_progress(request, backup, "catalog/partials/backup_progress.html", {"backup": backup})


@operator_required
@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    backup = get_object_or_404(Backup, pk=pk)
    try:
        backup_runs.cancel_backup(request.user, backup)
        messages.success(request, "Cancel requested: the backup stops within seconds and its partial data is removed.")
    except services.Refused as exc:
        messages.error(request, str(exc))
    return redirect(backup)
