"""The form administrators fill in to create an API token."""

from django import forms

from catalog.api.models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text='What uses it, e.g. "CI migrations" or "Prometheus".')
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiToken.READ],
        error_messages={"required": "Choose at least one scope."},
    )
    expires_in_days = forms.IntegerField(
        label="Expires after (days)",
        required=False,
        min_value=1,
        max_value=3650,
        help_text="Leave empty for a token that does not expire.",
    )
