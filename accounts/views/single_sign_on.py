"""Signing in with the organisation's identity provider (OpenID Connect):
/login/sso/start/ sends the browser there, /login/sso/callback/ is where it
comes back. Both are under /login/, which anonymous visitors may open
(catalog.middleware.LoginRequiredEverywhere); both answer GET only. What is
checked, and how, is accounts/oidc.py; who the person is, accounts/sso.py."""

import logging
from typing import Any

from django.conf import settings
from django.contrib import auth, messages
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from accounts import oidc, sso

log = logging.getLogger(__name__)

# How the session was signed in; the two-factor step leaves "sso" sessions to the provider's own factors.
SIGNED_IN_WITH = "accounts.signed_in_with"
SSO = "sso"


class StartSignIn(OIDCAuthenticationRequestView):
    """The library's view: a fresh state, nonce and PKCE verifier in the
    session (kept per state, so two tabs may sign in at once), the `next`
    page if it is on this site, and a redirect to the provider."""

    def __init__(self, **kwargs: Any) -> None:
        # The library reads the provider's endpoint here, at every request;
        # it is discovered in get(), once.
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc.enabled():
            raise Http404("Single sign-on is not set up.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc.provider().authorization_endpoint
        except oidc.SignInRefused as refusal:
            messages.error(request, refusal.message)
            return redirect("login")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        response: HttpResponse = super().get(request)
        return response


@require_GET
@never_cache
def finish_sign_in(request: HttpRequest) -> HttpResponseBase:
    if not oidc.enabled():
        raise Http404("Single sign-on is not set up.")
    try:
        nonce, code_verifier = take_state(request)
        claims = oidc.SingleSignOnBackend().verified_claims(request, nonce, code_verifier)
        user = sso.person_for(claims)
    except oidc.SignInRefused as refusal:
        sso.record_refusal(refusal)
        messages.error(request, refusal.message)
        return redirect("login")
    next_url = request.session.get("oidc_login_next")
    auth.login(request, user, backend=oidc.BACKEND)
    request.session[SIGNED_IN_WITH] = SSO
    request.session.pop("oidc_login_next", None)
    return redirect(next_url or settings.LOGIN_REDIRECT_URL)


def take_state(request: HttpRequest) -> tuple[str, str | None]:
    """The nonce and PKCE verifier this browser's session kept for the state
    the provider sent back, removed so that the same answer cannot be used
    twice; refused when the session has no such state."""
    if request.GET.get("error"):
        error = request.GET["error"][:100]
        description = request.GET.get("error_description", "")[:200]
        forget_state(request, request.GET.get("state", ""))
        log.warning("Single sign-on: the provider answered %s: %s", error, description)
        if error == "access_denied":
            message = f"{settings.OIDC_PROVIDER_NAME} did not let you sign in to Strongroom."
        else:
            message = f"{settings.OIDC_PROVIDER_NAME} could not sign you in ({error})."
        raise oidc.SignInRefused("provider_error", message)
    state = request.GET.get("state", "")
    entry = forget_state(request, state)
    if not (entry and request.GET.get("code")):
        log.warning("Single sign-on: a callback whose state this session did not start")
        raise oidc.not_completed("state")
    return entry["nonce"], entry.get("code_verifier")


def forget_state(request: HttpRequest, state: str) -> dict[str, Any] | None:
    states = request.session.get("oidc_states")
    if not (isinstance(states, dict) and state in states):
        return None
    entry: dict[str, Any] = states.pop(state)
    request.session["oidc_states"] = states
    # Saved now, before the calls to the provider: the state is spent even if
    # what follows fails.
    request.session.save()
    return entry
