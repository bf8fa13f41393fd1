"""The compliance report as a page and as CSV and PDF downloads."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from catalog import audit
from catalog.decorators import viewer_required
from compliance import exports
from compliance.forms import ReportForm

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


@viewer_required
@require_GET
def report_page(request: HttpRequest) -> HttpResponse:
    form = ReportForm(request.GET)
    ctx = {"form": form, "report": form.build() if form.is_valid() else None, "query": request.GET.urlencode()}
    return render(request, "compliance/report.html", ctx)


@viewer_required
@require_GET
def download(request: HttpRequest, kind: str) -> HttpResponse:
    form = ReportForm(request.GET)
    if not form.is_valid():  # the page says what is wrong with the period
        return redirect(f"{reverse('compliance_report')}?{request.GET.urlencode()}")
    report = form.build()
    body = exports.to_csv(report).encode() if kind == "csv" else exports.to_pdf(report)
    with transaction.atomic():
        audit.record(
            request.user,
            "report.export",
            None,
            {"format": kind, "period": report.period_text(), "sources": [s.name for s in report.sources]},
        )
    response = HttpResponse(body, content_type=CONTENT_TYPES[kind])
    response["Content-Disposition"] = f'attachment; filename="{report.filename(kind)}"'
    return response
