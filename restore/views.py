"""Restore pages. The guided wizard builds on these; for now the history and
each job's steps and report."""

from django.shortcuts import get_object_or_404, render

from catalog.decorators import viewer_required
from catalog.views import page_of
from restore.models import RestoreJob


@viewer_required
def restore_list(request):
    jobs = RestoreJob.objects.select_related("backup", "source", "requested_by")
    return render(request, "restore/restore_list.html", {"page": page_of(request, jobs)})


@viewer_required
def restore_detail(request, pk):
    job = get_object_or_404(RestoreJob.objects.select_related("backup", "source", "safety_backup"), pk=pk)
    return render(request, "restore/restore_detail.html", {"job": job})
