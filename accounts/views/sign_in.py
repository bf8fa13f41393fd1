"""Signing in: the password, then for users with two-factor a code or a
security key (accounts/two_factor.py says how the two steps hold together). The Django
admin's own login page sends people here, so that it is no way around the
second step."""

from typing import Any
from urllib.parse import urlencode

from axes.helpers import get_lockout_response
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts import oidc, two_factor
from catalog.errors import Refused


def on_this_site(request: HttpRequest, url: str | None) -> bool:
    return bool(url) and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )


def safe_next(request: HttpRequest, url: str | None) -> str:
    """Where to go after signing in: `next` when it stays on this site, else the dashboard."""
    return url if url and on_this_site(request, url) else resolve_url(settings.LOGIN_REDIRECT_URL)


def asked_next(request: HttpRequest) -> str | None:
    return request.POST.get("next") or request.GET.get("next")


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def sign_in(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(safe_next(request, asked_next(request)))
    # Only break-glass users may use a password when single sign-on says so (accounts/oidc.py).
    password_refused = oidc.password_refusal(request)
    data = request.POST if request.method == "POST" and not password_refused else None
    form = AuthenticationForm(request, data=data, initial={"username": request.POST.get("username", "")})
    if form.is_valid():
        user = form.get_user()
        next_url = safe_next(request, asked_next(request))
        if two_factor.has_two_factor(user):
            two_factor.start_pending_sign_in(request, user, next_url)
            return redirect("login_second_factor")
        two_factor.complete_sign_in(request, user, user.backend, None)
        return redirect(next_url)
    asked = asked_next(request)
    context = {
        "form": form,
        "next": asked if on_this_site(request, asked) else "",
        "password_refused": password_refused,
    }
    return render(request, "registration/login.html", context)


def lockout(request: HttpRequest, user: User) -> HttpResponse:
    two_factor.forget_pending_sign_in(request)
    return get_lockout_response(request, None, two_factor.axes_credentials(user))


@sensitive_post_parameters("code", "key_answer")
@csrf_protect
@never_cache
def second_factor(request: HttpRequest) -> HttpResponseBase:
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    was_pending = two_factor.PENDING_KEY in request.session
    pending = two_factor.pending_sign_in(request)
    if pending is None:
        if was_pending:
            messages.info(request, "That sign-in waited more than five minutes for its code: sign in again.")
        return redirect("login")
    error = ""
    if request.method == "POST":
        if two_factor.locked_out(request, pending.user):
            return lockout(request, pending.user)
        # static/js/webauthn.js puts a key's answer in this form, in place of a code.
        key_answer = request.POST.get("key_answer", "")
        if key_answer:
            check = two_factor.check_key(request, pending.user, key_answer, bound_to=pending.started_at)
        else:
            check = two_factor.check_code(request, pending.user, request.POST.get("code", ""))
        if check.method:
            two_factor.complete_sign_in(request, pending.user, pending.backend, check.method)
            if check.recovery_codes_left is not None:
                warn_about_recovery_codes(request, check.recovery_codes_left)
            return redirect(safe_next(request, pending.next_url))
        if getattr(request, "axes_locked_out", False):
            return lockout(request, pending.user)
        if check.wait_seconds:
            error = two_factor.wait_message(check.wait_seconds)
        elif key_answer:
            error = "Your security key's answer was not accepted. Try again, or use a code."
        else:
            error = "That code is not right. Type the code your app shows now, or a recovery code you have not used."
    context = {
        "error": error,
        "username": pending.user.get_username(),
        "minutes": two_factor.PENDING_SECONDS // 60,
        "has_authenticator": two_factor.authenticator(pending.user) is not None,
        "has_security_key": two_factor.has_security_key(pending.user),
    }
    return render(request, "accounts/second_factor.html", context)


@csrf_protect
@never_cache
@require_POST
def second_factor_key_options(request: HttpRequest) -> HttpResponse:
    """The challenge for signing in with a security key, fetched by
    static/js/webauthn.js when the button is pressed."""
    pending = two_factor.pending_sign_in(request)
    if pending is None:
        return JsonResponse({"error": "This sign-in waited more than five minutes: start again."}, status=403)
    try:
        options = two_factor.sign_in_key_options(request, pending)
    except Refused as refusal:
        return JsonResponse({"error": str(refusal)}, status=403)
    return HttpResponse(options, content_type="application/json")


def warn_about_recovery_codes(request: HttpRequest, left: int) -> None:
    if left == 0:
        messages.warning(request, "You have used your last recovery code: make new ones on your Two-factor page now.")
    elif left <= 3:
        messages.warning(request, f"{left} recovery codes left: make new ones on your Two-factor page.")
    else:
        messages.info(request, f"Recovery code used; {left} left.")


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """Stands in for the admin's own login page (AccountsConfig.ready()), which
    would sign in with a password alone: a visit goes to our sign-in with
    its `next`; a form posted to it is our sign-in's, lockouts included."""
    if request.method == "POST":
        return sign_in(request)
    if request.user.is_authenticated:
        if admin.site.has_permission(request):
            return redirect(safe_next(request, request.GET.get("next") or reverse("admin:index")))
        # Sending a signed-in user who is not staff to sign in would go round in a circle.
        raise PermissionDenied
    next_url = request.GET.get("next") or reverse("admin:index")
    return redirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
