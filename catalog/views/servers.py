"""Restore servers: other PostgreSQL servers a backup may be restored onto,
each with its own connection secret and the version its last check found."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog import services
from catalog.decorators import operator_required, viewer_required
from catalog.forms import RestoreServerForm
from catalog.models import RestoreServer
from catalog.views.common import delete_config, next_url, test_config


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/server_list.html", {"servers": RestoreServer.objects.all()})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "catalog/server_detail.html", {"server": get_object_or_404(RestoreServer, pk=pk)})


@operator_required
def new(request: HttpRequest) -> HttpResponse:
    return edit_server(request, RestoreServer())


@operator_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    return edit_server(request, get_object_or_404(RestoreServer, pk=pk))


def edit_server(request: HttpRequest, server: RestoreServer) -> HttpResponse:
    form = RestoreServerForm(request.POST or None, instance=server)
    if request.method == "POST" and form.is_valid():
        server = services.save_restore_server(
            request.user, form.save(commit=False), changed_fields=form.changed_fields(), secrets=form.secrets()
        )
        # Checked at once, so the wizard knows the version before anyone needs it.
        ok, message = services.check_restore_server(request.user, server)
        (messages.success if ok else messages.warning)(request, f"Saved {server}. {message}")
        return redirect(server)
    return render(request, "catalog/server_form.html", {"form": form, "object": server})


@operator_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    return delete_config(
        request, get_object_or_404(RestoreServer, pk=pk), services.delete_restore_server, "server_list"
    )


@operator_required
@require_POST
def test(request: HttpRequest) -> HttpResponse:
    """Tries the values now in the form, before saving (htmx)."""
    return test_config(request, RestoreServer, RestoreServerForm, "server_id", services.test_restore_server)


@operator_required
@require_POST
def check(request: HttpRequest, pk: int) -> HttpResponse:
    """Connects to a saved server and records its version."""
    server = get_object_or_404(RestoreServer, pk=pk)
    ok, message = services.check_restore_server(request.user, server)
    (messages.success if ok else messages.error)(request, f"{server}: {message}")
    return redirect(next_url(request, server.get_absolute_url()))
