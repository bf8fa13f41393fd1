"""The channel form: the fields of the chosen kind, its secrets sealed and
never rendered back ("leave blank to keep" on edit)."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from catalog.alerts import apprise_urls
from catalog.alerts.models import Channel
from catalog.endpoints import endpoint_problem
from catalog.forms import KEEP_HELP, secret_field

# Form field → name in Channel.secrets(), per kind.
SECRET_FIELDS = {
    Channel.SLACK: {"slack_url": "url"},
    Channel.WEBHOOK: {"webhook_secret": "secret"},
    Channel.PAGERDUTY: {"routing_key": "routing_key"},
    Channel.APPRISE: {"apprise_url": "url"},
}


def http_url(value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValidationError("Start the URL with https:// (or http://).")
    # The message names the host only: a Slack URL is a secret.
    if problem := endpoint_problem(value):
        raise ValidationError(problem)


class ChannelForm(forms.ModelForm):
    slack_url = secret_field(
        "Slack webhook URL",
        "From Slack: Apps → Incoming Webhooks, e.g. https://hooks.slack.com/services/T…/B…/…. "
        "It is a secret: it is stored encrypted and never shown again.",
    )
    webhook_secret = secret_field(
        "Signing secret", "Signs each body (HMAC-SHA256). Leave blank and one is generated and shown once."
    )
    new_webhook_secret = forms.BooleanField(
        label="Generate a new signing secret",
        required=False,
        help_text="The old one stops working at once; the new one is shown once after saving.",
    )
    routing_key = secret_field(
        "Integration key (routing key)", "From PagerDuty: Service → Integrations → Events API v2. Stored encrypted."
    )
    apprise_url = secret_field(
        "Apprise URL",
        "One URL in Apprise's form, e.g. tgram://bot-token/chat-id, discord://webhook-id/webhook-token, "
        "ntfys://user:password@ntfy.example.com/topic or gotify://gotify.example.com/token; "
        f"every service's format is at {apprise_urls.FORMATS_URL}. "
        "It holds tokens or passwords: it is stored encrypted and never shown again.",
    )
    events = forms.MultipleChoiceField(
        choices=Channel.EVENT_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Pick at least one event to send."},
        help_text="A recovery is sent for each problem this channel was told about.",
    )

    class Meta:
        model = Channel
        fields = [
            "name",
            "kind",
            "email_to",
            "url",
            "slack_url",
            "webhook_secret",
            "new_webhook_secret",
            "routing_key",
            "apprise_url",
            "events",
            "enabled",
        ]
        labels = {"url": "Webhook URL"}
        help_texts = {
            "email_to": "Comma-separated addresses. Sent through the SMTP server set in the environment (EMAIL_HOST).",
            "url": "Strongroom POSTs a JSON body here, signed with the secret below.",
            "enabled": "A channel that failed for good (a wrong URL or key) is switched off; tick to enable it again.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.secrets() if self.instance.pk else {}
        for kind, names in SECRET_FIELDS.items():
            for field, name in names.items():
                if self.instance.kind == kind and stored.get(name):
                    self.fields[field].help_text = KEEP_HELP
        if not self.instance.pk:
            self.initial["events"] = self.instance.events or [value for value, _ in Channel.EVENT_CHOICES]
            del self.fields["new_webhook_secret"]
        self.stored = stored

    def clean_email_to(self) -> str:
        addresses = [address.strip() for address in self.cleaned_data["email_to"].split(",") if address.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"“{address}” is not an email address.") from None
        return ", ".join(addresses)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean() returns
        kind = data.get("kind") or ""
        if kind == Channel.EMAIL and not data.get("email_to"):
            self.add_error("email_to", "Give at least one address.")
        if kind == Channel.WEBHOOK:
            if not data.get("url"):
                self.add_error("url", "Give the URL to POST to.")
            else:
                self.check_url("url", data["url"])
        if kind == Channel.SLACK and data.get("slack_url"):
            self.check_url("slack_url", data["slack_url"])
        if kind == Channel.APPRISE and data.get("apprise_url"):
            data["apprise_url"] = data["apprise_url"].strip()
            # The message never repeats the URL: it is a secret.
            if problem := apprise_urls.url_problem(data["apprise_url"]):
                self.add_error("apprise_url", problem)
        for field, name in SECRET_FIELDS.get(kind, {}).items():
            has_stored = self.instance.kind == kind and self.stored.get(name)
            # A value refused above already says what is wrong with it.
            if field != "webhook_secret" and not data.get(field) and not has_stored and field not in self.errors:
                self.add_error(field, "Required.")
        # Only the chosen kind's target is kept.
        if kind != Channel.EMAIL:
            data["email_to"] = ""
        if kind != Channel.WEBHOOK:
            data["url"] = ""
        return data

    def check_url(self, field: str, value: str) -> None:
        try:
            http_url(value)
        except ValidationError as exc:
            self.add_error(field, exc)

    def secrets(self) -> dict[str, str | None]:
        """{name in Channel.secrets(): value} for the chosen kind; blank keeps the stored one."""
        kind = self.cleaned_data.get("kind") or ""
        return {name: self.cleaned_data.get(field) for field, name in SECRET_FIELDS.get(kind, {}).items()}

    def changed_fields(self) -> list[str]:
        secret_inputs = {"slack_url", "webhook_secret", "routing_key", "apprise_url", "new_webhook_secret"}
        return [name for name in self.changed_data if name not in secret_inputs]
