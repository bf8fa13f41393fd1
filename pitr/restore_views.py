"""The wizard's point-in-time path (target, then where; the plan shown live
as the target changes), the job page with its progress and how to connect,
and the "Verify PITR" drill."""

import os
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog import queues
from catalog.decorators import operator_required, viewer_required
from catalog.models import Source
from catalog.services import Refused
from catalog.views.common import HtmxHttpRequest, job_progress, page_of
from pitr import restores
from pitr.models import PitrRestore


class PointInTimeForm(forms.Form):
    target_kind = forms.ChoiceField(
        choices=PitrRestore.TARGET_CHOICES, initial=PitrRestore.TIME, widget=forms.RadioSelect
    )
    # In the site's time zone (settings.TIME_ZONE): an aware datetime comes out.
    target_time = forms.DateTimeField(
        required=False, input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
    )
    restore_point = forms.CharField(required=False, max_length=64)
    data_directory = forms.CharField(required=False, max_length=1000)
    port = forms.IntegerField(required=False, min_value=1024, max_value=65535)
    # Any host name: one whose workers stopped since the page was drawn is
    # refused with the reason by restores.check_host, not as "not a choice".
    host = forms.CharField(required=False, max_length=64)

    def target(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "target_kind": data["target_kind"],
            "target_time": data.get("target_time"),
            "restore_point": data.get("restore_point") or "",
        }


def protected_source(pk: int) -> Source:
    return get_object_or_404(Source, pk=pk, engine="postgresql", protection__enabled=True)


def suggested_directory(source: Source) -> str:
    base = os.path.join(str(settings.PITR_RESTORE_ROOT), f"{source.slug}-pitr")
    name, counter = base, 2
    while os.path.exists(name):
        name, counter = f"{base}-{counter}", counter + 1
    return name


def plan_or_refusal(source: Source, form: PointInTimeForm) -> tuple[restores.Plan | None, str | None]:
    """(plan, None) or (None, the reason in words) for the form's target."""
    if not form.is_valid():
        return None, "Choose the moment as a date and time, e.g. 2026-11-26 04:30:00."
    try:
        return restores.plan_restore(source, **form.target()), None
    except Refused as exc:
        return None, str(exc)


@operator_required
def restore_start(request: HttpRequest, pk: int) -> HttpResponse:
    source = protected_source(pk)
    hosts = queues.hosts_with_own_queue()
    if request.method == "POST":
        form = PointInTimeForm(request.POST)
        if form.is_valid():
            try:
                job = restores.request_pitr_restore(
                    request.user,
                    source,
                    data_directory=form.cleaned_data["data_directory"] or "",
                    port=form.cleaned_data["port"],
                    host=form.cleaned_data["host"] or None,
                    **form.target(),
                )
                return redirect("pitr_restore_detail", job.pk)
            except Refused as exc:
                messages.error(request, str(exc))
        plan, refusal = plan_or_refusal(source, form)
    else:
        form = PointInTimeForm(
            initial={
                "data_directory": suggested_directory(source),
                "port": restores.free_port(),
                "host": suggested_host(hosts),
            }
        )
        plan, refusal = None, None
    recent = PitrRestore.objects.filter(source=source).select_related("requested_by")[:10]
    return render(
        request,
        "pitr/restore_start.html",
        {
            "source": source,
            "form": form,
            "plan": plan,
            "refusal": refusal,
            "recent": recent,
            "restore_root": settings.PITR_RESTORE_ROOT,
            "os_user": settings.PITR_OS_USER,
            "hosts": hosts,
            "this_host": settings.HOST_NAME,
        },
    )


def suggested_host(hosts: list[str]) -> str:
    """This host when its own queue runs (the paths and port shown were
    checked here), else the first host whose does."""
    return settings.HOST_NAME if settings.HOST_NAME in hosts or not hosts else hosts[0]


@operator_required
def restore_plan(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx partial: the base backup, WAL range and size for the target."""
    source = protected_source(pk)
    plan, refusal = plan_or_refusal(source, PointInTimeForm(request.GET))
    return render(request, "pitr/partials/restore_plan.html", {"plan": plan, "refusal": refusal})


@viewer_required
def restore_list(request: HttpRequest) -> HttpResponse:
    jobs = PitrRestore.objects.select_related("source", "requested_by")
    return render(request, "pitr/restore_list.html", {"page": page_of(request, jobs)})


@viewer_required
def restore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(PitrRestore.objects.select_related("source", "base_backup", "requested_by"), pk=pk)
    return render(request, "pitr/restore_detail.html", {"job": job, **job_context(job)})


def job_context(job: PitrRestore) -> dict[str, Any]:
    running = job.server_running()
    return {
        "target": restores.describe_target(job),
        "connect": restores.connection_hint(job) if running else "",
        "server_running": running,
        "os_user": settings.PITR_OS_USER,
    }


@viewer_required
def restore_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(PitrRestore, pk=pk)
    return job_progress(request, job, "pitr/partials/restore_progress.html", {"job": job, **job_context(job)})


@operator_required
@require_POST
def restore_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(PitrRestore, pk=pk)
    try:
        restores.cancel_pitr_restore(request.user, job)
        messages.success(request, "Cancel requested: the restore stops within seconds and its directory is removed.")
    except Refused as exc:
        messages.error(request, str(exc))
    return redirect("pitr_restore_detail", job.pk)


@operator_required
@require_POST
def restore_stop_server(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(PitrRestore, pk=pk)
    try:
        if restores.stop_restored_server(request.user, job):
            messages.success(
                request,
                f"The restored server on port {job.port} was stopped; its directory "
                f"{job.data_directory} stays on {job.host or 'the worker host'}.",
            )
        else:
            messages.success(
                request,
                f"Asked host {job.host} to stop the restored server on port {job.port}: it stops within "
                f"seconds, and its directory {job.data_directory} stays there.",
            )
    except Refused as exc:
        messages.error(request, str(exc))
    return redirect("pitr_restore_detail", job.pk)


@operator_required
@require_POST
def drill_start(request: HttpRequest, pk: int) -> HttpResponse:
    source = protected_source(pk)
    try:
        job = restores.request_pitr_drill(request.user, source)
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("pitr_restore_start", source.pk)
    return redirect("pitr_restore_detail", job.pk)
