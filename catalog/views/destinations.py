"""Destinations: where copies live; what they hold that the catalog does not know."""

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog import orphans, services
from catalog.decorators import operator_required, viewer_required
from catalog.engine.errors import EngineError
from catalog.forms import DestinationForm
from catalog.models import Destination
from catalog.views.common import delete_config, edit_config, test_config


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    destinations = Destination.objects.annotate(copy_count=Count("copies"))
    return render(request, "catalog/destination_list.html", {"destinations": destinations})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    copies = destination.copies.select_related("backup", "backup__source").order_by("-backup__created_at")[:20]
    ctx = {"destination": destination, "plans": destination.plans.all(), "copies": copies, "usage": destination.usage()}
    return render(request, "catalog/destination_detail.html", ctx)


@operator_required
@require_POST
def scan(request: HttpRequest, pk: int) -> HttpResponse:
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
def remove_orphans(request: HttpRequest, pk: int) -> HttpResponse:
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
@require_POST
def forget_host_key(request: HttpRequest, pk: int) -> HttpResponse:
    """Forgets an SFTP server's pinned host key, after it was re-keyed legitimately."""
    destination = get_object_or_404(Destination, pk=pk)
    try:
        services.forget_host_key(request.user, destination)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Forgot the pinned host key of {destination}: the next connection pins the key the server offers."
        )
    return redirect(destination)


@operator_required
def new(request: HttpRequest) -> HttpResponse:
    return edit_config(
        request, DestinationForm, Destination(), services.save_destination, "catalog/destination_form.html"
    )


@operator_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    return edit_config(
        request, DestinationForm, destination, services.save_destination, "catalog/destination_form.html"
    )


@operator_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    return delete_config(request, destination, services.delete_destination, "destination_list")


@operator_required
@require_POST
def test(request: HttpRequest) -> HttpResponse:
    """Writes, reads and deletes a probe object with the form's values (htmx)."""
    return test_config(request, Destination, DestinationForm, "destination_id", services.test_destination)
