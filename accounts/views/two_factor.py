"""Two-factor pages: each person sets up, renews and turns off their own,
adds and removes their security keys (auditors too: it is their own account,
so catalog.middleware lets these POSTs through); administrators set the
policy and reset someone else's. The JSON views hand static/js/webauthn.js
the options of a WebAuthn ceremony."""

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts import two_factor
from catalog.decorators import operator_required
from catalog.errors import Refused


def own_user(request: HttpRequest) -> User:
    # Signed in (catalog.middleware.LoginRequiredEverywhere), so a real User.
    assert isinstance(request.user, User)
    return request.user


def recovery_codes_page(request: HttpRequest, codes: list[str], title: str, replaced: bool) -> HttpResponse:
    """The only time the codes are shown (the views are never_cache, so no cache keeps them)."""
    return render(request, "accounts/two_factor_codes.html", {"codes": codes, "title": title, "replaced": replaced})


@sensitive_post_parameters("code")
@never_cache
def overview(request: HttpRequest) -> HttpResponseBase:
    """Your own two-factor: the set-up (QR code, key, a code to confirm) while
    it is off; its state, new recovery codes and the off switch once on."""
    user = own_user(request)
    state = two_factor.status(user)
    error = ""
    if request.method == "POST" and not state["authenticator"]:
        try:
            codes = two_factor.enrol(request, user, request.POST.get("code", ""))
        except Refused as refusal:
            error = str(refusal)
        else:
            if codes:
                return recovery_codes_page(request, codes, "Two-factor is on", replaced=False)
            messages.success(request, "Authenticator app added: codes from it sign you in too.")
            return redirect("two_factor")
    context: dict[str, object] = {"state": state, "error": error, "key_name_length": two_factor.KEY_NAME_LENGTH}
    if not state["authenticator"]:
        key = two_factor.enrolment_key(request)
        context["otpauth_uri"] = uri = two_factor.provisioning_uri(user, key)
        context["qr_svg"] = two_factor.qr_svg(uri)
        context["key_for_typing"] = two_factor.key_for_typing(key)
        context["must_enrol"] = two_factor.needs_enrolment(user, request)
    return render(request, "accounts/two_factor.html", context)


def current_factor(request: HttpRequest) -> tuple[str, str]:
    """The code typed, or the security key's answer static/js/webauthn.js put in the form."""
    return request.POST.get("code", ""), request.POST.get("key_answer", "")


@sensitive_post_parameters("code", "key_answer")
@never_cache
@require_POST
def new_recovery_codes(request: HttpRequest) -> HttpResponseBase:
    try:
        codes = two_factor.regenerate_recovery_codes(request, own_user(request), *current_factor(request))
    except Refused as refusal:
        messages.error(request, str(refusal))
        return redirect("two_factor")
    return recovery_codes_page(request, codes, "New recovery codes", replaced=True)


@sensitive_post_parameters("code", "key_answer")
@require_POST
def disable(request: HttpRequest) -> HttpResponseBase:
    try:
        two_factor.disable(request, own_user(request), *current_factor(request))
    except Refused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, "Two-factor is off: your password alone signs you in.")
    return redirect("two_factor")


def ceremony_options(make_options: Callable[[], str]) -> HttpResponse:
    try:
        return HttpResponse(make_options(), content_type="application/json")
    except Refused as refusal:
        return JsonResponse({"error": str(refusal)}, status=400)


@never_cache
@require_POST
def key_options(request: HttpRequest) -> HttpResponse:
    """The challenge for adding a security key, fetched when its button is pressed."""
    return ceremony_options(lambda: two_factor.key_options(request, own_user(request)))


@never_cache
@require_POST
def confirm_options(request: HttpRequest) -> HttpResponse:
    """The challenge for confirming a change with a security key."""
    return ceremony_options(lambda: two_factor.confirm_options(request, own_user(request)))


@sensitive_post_parameters("key_answer")
@never_cache
@require_POST
def add_key(request: HttpRequest) -> HttpResponseBase:
    name = request.POST.get("name", "")
    try:
        codes = two_factor.add_key(request, own_user(request), name, request.POST.get("key_answer", ""))
    except Refused as refusal:
        messages.error(request, str(refusal))
        return redirect("two_factor")
    if codes:
        return recovery_codes_page(request, codes, "Two-factor is on", replaced=False)
    messages.success(request, "Security key added: it signs you in too.")
    return redirect("two_factor")


@sensitive_post_parameters("code", "key_answer")
@require_POST
def remove_key(request: HttpRequest, pk: int) -> HttpResponseBase:
    try:
        key = two_factor.remove_key(request, own_user(request), pk, *current_factor(request))
    except Refused as refusal:
        messages.error(request, str(refusal))
    else:
        if two_factor.has_two_factor(own_user(request)):
            messages.success(request, f"Security key “{key.name}” removed: it no longer signs you in.")
        else:
            messages.success(
                request, f"Security key “{key.name}” removed. Two-factor is off: your password alone signs you in."
            )
    return redirect("two_factor")


@operator_required
@require_POST
def policy(request: HttpRequest) -> HttpResponseBase:
    required = request.POST.get("require_two_factor_for_administrators") == "on"
    if two_factor.set_two_factor_required(request.user, required):
        if required:
            messages.success(
                request, "Administrators must now use two-factor: those without it are asked to set it up first."
            )
        else:
            messages.success(request, "Two-factor is now optional for administrators.")
    return redirect("people_list")


@operator_required
@require_POST
def reset(request: HttpRequest, pk: int) -> HttpResponseBase:
    person = get_object_or_404(User, pk=pk)
    try:
        two_factor.reset_two_factor(request.user, person)
    except Refused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(
            request,
            f"Two-factor of {person.get_username()} is reset: their password alone signs them in "
            "until they set it up again.",
        )
    return redirect("person_detail", person.pk)
