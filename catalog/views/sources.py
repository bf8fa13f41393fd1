"""Sources: the databases Strongroom protects."""

from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from catalog import services
from catalog.decorators import operator_required, viewer_required
from catalog.forms import RunBackupForm, SourceForm
from catalog.models import Source
from catalog.views.common import delete_config, edit_config, test_config


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    sources = Source.objects.annotate(backup_count=Count("backups"), last_at=Max("backups__created_at"))
    return render(request, "catalog/source_list.html", {"sources": sources})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    ctx = {
        "source": source,
        "plans": source.plans.prefetch_related("destinations"),
        "backups": source.backups.for_rows()[:10],
        "run_form": RunBackupForm(),
    }
    return render(request, "catalog/source_detail.html", ctx)


@operator_required
def new(request: HttpRequest) -> HttpResponse:
    return edit_config(request, SourceForm, Source(), services.save_source, "catalog/source_form.html")


@operator_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=pk)
    return edit_config(request, SourceForm, source, services.save_source, "catalog/source_form.html")


@operator_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    return delete_config(request, get_object_or_404(Source, pk=pk), services.delete_source, "source_list")


@operator_required
@require_POST
def test(request: HttpRequest) -> HttpResponse:
    """Tests the connection with the values now in the form (htmx)."""
    return test_config(request, Source, SourceForm, "source_id", services.test_source)
