from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from accounts import two_factor

GetResponse = Callable[[HttpRequest], HttpResponseBase]


class TwoFactorEnrolmentRequired:
    """While the sign-in policy requires two-factor for administrators, an
    administrator without it (signed in with a password before the policy,
    or since a reset) opens the set-up page and nothing else until it is on.
    Still reachable: that page, signing out, static files and the health
    checks, and the API and /metrics, which their tokens authorize whatever
    the session (catalog/api/auth.py)."""

    OPEN_PREFIXES = (
        "/account/two-factor/",
        "/logout/",
        "/login/",
        "/static/",
        "/favicon.ico",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/",
    )

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path.startswith(self.OPEN_PREFIXES) or not two_factor.needs_enrolment(request.user, request):
            return self.get_response(request)
        if getattr(request, "htmx", False):
            # A polling fragment would otherwise swap the whole set-up page into itself.
            return HttpResponseClientRedirect(reverse("two_factor"))
        return redirect("two_factor")
