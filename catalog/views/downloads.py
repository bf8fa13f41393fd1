"""A backup's two downloads (catalog/downloads.py): the plain dump, and the
stored files as they are. Administrators only, audited, POST (a download is
recorded in the audit trail, which a link prefetched by a browser must not do)."""

from collections.abc import Iterable

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from catalog import audit, downloads
from catalog.decorators import operator_required
from catalog.models import Backup


def refused(request: HttpRequest, backup: Backup, problems: list[str]) -> HttpResponseRedirect:
    messages.error(request, "No stored copy of this backup can be read: " + ("; ".join(problems) or "none is left"))
    return redirect(backup)


def attachment(
    chunks: Iterable[bytes], name: str, content_type: str = "application/octet-stream"
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@operator_required
@require_POST
def plain(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The dump, decrypted and decompressed, streamed from the first copy that opens."""
    backup = get_object_or_404(Backup.objects.select_related("source"), pk=pk, status__in=Backup.WITH_DATA)
    if problem := downloads.missing_key(backup):
        messages.error(request, problem)
        return redirect(backup)
    copy, reader, problems = downloads.open_first_copy(backup)
    if copy is None or reader is None:  # both or neither
        return refused(request, backup, problems)
    audit.record(request.user, "backup.download", backup, {"copy": copy.location_display()})
    return attachment(downloads.plain_chunks(backup, reader), downloads.plain_name(backup))


@operator_required
@require_POST
def stored(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The stored object with its manifest (and globals) as they are, in one
    tar: encrypted when the backup is, so no key is needed to send it."""
    backup = get_object_or_404(Backup.objects.select_related("source"), pk=pk, status__in=Backup.WITH_DATA)
    files, problems = downloads.open_stored_files(backup)
    if files is None:
        return refused(request, backup, problems)
    audit.record(
        request.user,
        "backup.download_stored",
        backup,
        {"copy": files.copy.location_display(), "encrypted": backup.encrypted},
    )
    return attachment(files.tar_chunks(), downloads.stored_name(backup), "application/x-tar")
