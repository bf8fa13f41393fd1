"""Verification pages: start, follow, read the evidence, list them all."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog import services, verification
from catalog.decorators import operator_required, viewer_required
from catalog.forms import VerificationFilterForm
from catalog.models import Backup, Verification
from catalog.views.common import HtmxHttpRequest, job_progress, page_of


@operator_required
@require_POST
def start(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    backup = get_object_or_404(Backup, pk=pk)
    try:
        job = verification.create_verification(request.user, backup, kind)
    except services.Refused as exc:
        messages.error(request, str(exc))
        return redirect(backup)
    return redirect(job)


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Verification.objects.select_related("backup", "source", "copy__destination"), pk=pk)
    return render(request, "catalog/verification_detail.html", {"job": job, "backup": job.backup})


@viewer_required
def progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Polled by htmx while a verification runs."""
    job = get_object_or_404(Verification, pk=pk)
    return job_progress(request, job, "catalog/partials/verification_progress.html", {"job": job})


@operator_required
@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Verification, pk=pk)
    try:
        verification.cancel_verification(request.user, job)
    except services.Refused as exc:
        messages.error(request, str(exc))
    return redirect(job)


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    filters = VerificationFilterForm(request.GET or None)
    jobs = filters.apply(Verification.objects.select_related("backup", "source", "triggered_by"))
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"filters": filters, "page": page_of(request, jobs), "query": query.urlencode()}
    return render(request, "catalog/verification_list.html", ctx)
