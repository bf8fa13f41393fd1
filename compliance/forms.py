"""Choosing what the compliance report covers."""

from typing import Any

from django import forms
from django.http import QueryDict
from django.utils import timezone

from catalog.models import Source
from compliance import report


class ReportForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))
    sources = forms.ModelMultipleChoiceField(
        Source.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every source.",
    )

    def __init__(self, data: QueryDict | None = None) -> None:
        # Without a query the report covers the last full calendar month, every source.
        first, last = report.last_full_month(timezone.localdate())
        data = data.copy() if data is not None else QueryDict(mutable=True)
        data.setdefault("start", first.isoformat())
        data.setdefault("end", last.isoformat())
        super().__init__(data)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("start"), data.get("end")
        if start and end:
            if start > end:
                self.add_error("end", "The period must end on or after the day it starts.")
            elif (end - start).days + 1 > report.MAX_DAYS:
                self.add_error("end", f"A report covers at most {report.MAX_DAYS} days; choose a shorter period.")
        return data

    def build(self) -> report.Report:
        data = self.cleaned_data
        return report.build(data["start"], data["end"], list(data["sources"]) or None)
