"""The plan form's table picker for export plans and MariaDB dumps (htmx)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from catalog import exports
from catalog.decorators import operator_required
from catalog.models import TABLE_CHOICE_FORMATS, BackupPlan, Source
from catalog.views.common import chosen


@operator_required
@require_GET
def table_picker(request: HttpRequest) -> HttpResponse:
    """The live tables of the source chosen in the plan form, grouped by schema.

    The form's own inputs come along (hx-include), so a choice survives a
    change of source; on first load the saved plan's choice is shown."""
    if request.GET.get("format") not in TABLE_CHOICE_FORMATS:
        return render(request, "catalog/partials/export_tables.html", {"picker": None})
    source = chosen(Source.objects, request.GET.get("source"))
    plan = chosen(BackupPlan.objects, request.GET.get("plan_id"))
    if "export_picker" in request.GET:
        tables, sets = exports.selection_from(request.GET)
    elif plan:
        tables, sets = plan.export_tables, plan.export_sets
    else:
        tables, sets = [], []
    return render(request, "catalog/partials/export_tables.html", {"picker": exports.picker(source, tables, sets)})
