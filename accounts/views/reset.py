"""Choosing a password from a one-use link (an invitation or a reset sent
from the people page). Django's view checks the link; this one names the
page, says what happened, and audits the change."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.views import PasswordResetConfirmView
from django.db import transaction
from django.http import HttpResponse
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from catalog import audit


@method_decorator(never_cache, name="dispatch")
class SetPassword(PasswordResetConfirmView):
    template_name = "accounts/password_set.html"
    success_url = reverse_lazy("login")

    def form_valid(self, form: "SetPasswordForm[Any]") -> HttpResponse:
        with transaction.atomic():
            response = super().form_valid(form)
            audit.record(form.user, "person.password_set", form.user, {"username": form.user.get_username()})
        messages.success(self.request, "Your password is set. Sign in with it now.")
        return response
