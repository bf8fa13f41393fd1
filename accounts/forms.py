"""The forms of the users and roles page."""

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password

from accounts.people import ROLE_CHOICES

INVITE = "invite"
PASSWORD = "password"


class PersonForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        help_text="What they type to sign in: letters, digits and . @ + - _ only.",
        error_messages={"invalid": "Use only letters, digits and . @ + - _ in a user name."},
    )
    email = forms.EmailField(
        label="E-mail",
        required=False,
        help_text="Where their invitation and password resets go. Optional: without it, you pass links on yourself.",
    )
    role = forms.ChoiceField(choices=ROLE_CHOICES, widget=forms.RadioSelect, initial="auditor")
    sign_in = forms.ChoiceField(
        label="Their password",
        choices=[
            (INVITE, "They choose it, from a one-use link (shown to you, and e-mailed if they have an address)"),
            (PASSWORD, "I set it now and tell them"),
        ],
        widget=forms.RadioSelect,
        initial=INVITE,
    )
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Only when you set it now. At least 8 characters, and not a common one.",
    )

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(f"There is already a user named {username}.")
        return username

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("sign_in") == PASSWORD:
            password = data.get("password") or ""
            if not password:
                self.add_error("password", "Type the password, or let them choose it from a link.")
            else:
                try:
                    validate_password(password, User(username=data.get("username", ""), email=data.get("email", "")))
                except forms.ValidationError as exc:
                    self.add_error("password", exc)
        return data


class PersonChangeForm(forms.Form):
    email = forms.EmailField(label="E-mail", required=False)
    role = forms.ChoiceField(choices=ROLE_CHOICES, widget=forms.RadioSelect)
