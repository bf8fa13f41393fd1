"""The drills page's forms: the schedule, and a drill recorded by hand."""

from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone

from drills.models import Drill, DrillSchedule

# A schedule longer than this is not a schedule (the guide's longest is a year).
MAX_DAYS = 5 * 366


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = DrillSchedule
        fields = ["checksum_every_days", "partial_every_days", "full_every_days", "automatic"]
        help_texts = {"automatic": "The tick queues a drill when it is due; overdue drills alert either way."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("checksum_every_days", "partial_every_days", "full_every_days"):
            self.fields[name].widget.attrs["max"] = MAX_DAYS  # as clean() checks; below 1, clean() says why

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        for name in ("checksum_every_days", "partial_every_days", "full_every_days"):
            days = cleaned.get(name)
            if days is not None and not 1 <= days <= MAX_DAYS:
                self.add_error(name, f"Between 1 and {MAX_DAYS} days.")
        return cleaned


class ManualDrillForm(forms.Form):
    kind = forms.ChoiceField(choices=Drill.KIND_CHOICES)
    performed_at = forms.DateTimeField(
        label="When it took place",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="In the site's time zone.",
    )
    minutes = forms.IntegerField(
        label="Measured time (minutes)",
        min_value=0,
        max_value=60 * 24 * 30,
        help_text="From the start of the restore until the data was usable.",
    )
    outcome = forms.ChoiceField(
        choices=[("passed", "Passed"), ("failed", "Failed")], widget=forms.RadioSelect, initial="passed"
    )
    notes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=5000,
        help_text="What was restored, where, by whom; what went wrong if anything.",
    )

    def clean_performed_at(self) -> datetime:
        when = self.cleaned_data["performed_at"]
        if when > timezone.now():
            raise forms.ValidationError("A drill is recorded after it took place, not before.")
        return when
