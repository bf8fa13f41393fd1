"""Import a dump (catalog/imports.py): the page with its upload, streamed to
disk as it arrives (catalog/uploads.py), or an object of a destination."""

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from catalog import imports
from catalog.decorators import operator_required
from catalog.errors import Refused
from catalog.forms import ImportForm
from catalog.models import Backup
from catalog.uploads import DumpUploadHandler


@csrf_exempt  # checked below, once the upload handler is in place (csrf_protect reads the body)
@operator_required
def new(request: HttpRequest) -> HttpResponse:
    handler = DumpUploadHandler(request)
    if request.method == "POST":
        request.upload_handlers = [handler]
    try:
        return import_page(request, handler)
    finally:
        handler.discard()  # an upload the import did not take over: refused, invalid, or a failed CSRF check


@csrf_protect
def import_page(request: HttpRequest, handler: DumpUploadHandler) -> HttpResponse:
    form = ImportForm(request.POST or None, request.FILES or None, initial={"source": request.GET.get("source")})
    if request.method == "POST" and handler.refused:
        form.is_valid()
        form.add_error("dump", handler.refused)
    elif request.method == "POST" and form.is_valid():
        try:
            backup = start_import(request, form.cleaned_data, handler)
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"The dump passed its checks: {backup.imported_format}. It is being stored.")
            return to_backup(request, backup)
    return render(request, "catalog/import_form.html", {"form": form, "max_bytes": settings.IMPORT_MAX_BYTES})


def to_backup(request: HttpRequest, backup: Backup) -> HttpResponse:
    """To the new backup's page; the page's script (static/js/imports.js)
    sends the form itself, to show the upload's progress, and is told where
    to go rather than redirected, so that the message above is not spent on
    a page it never shows."""
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return HttpResponse(status=201, headers={"Location": backup.get_absolute_url()})
    return redirect(backup)


def start_import(request: HttpRequest, data: dict[str, Any], handler: DumpUploadHandler) -> Backup:
    if handler.upload is not None:
        imported_from = f"upload {os.path.basename(handler.upload.name or 'dump')}"
        staging = taken(handler)
    else:
        staging = imports.stage_object(data["destination"], data["key"])
        imported_from = imports.object_location(data["destination"], data["key"])
    return imports.import_dump(
        request.user, staging, data["source"], data["plan"], label=data["label"], imported_from=imported_from
    )


def taken(handler: DumpUploadHandler) -> Path:
    """The uploaded file's staging directory, which the import now owns."""
    assert handler.upload is not None, "an upload was staged"
    staging, handler.upload = handler.upload.staging, None
    return staging
