"""Single sign-on with OpenID Connect (mozilla-django-oidc), and the rule that
may keep password sign-in for the break-glass users alone.

A sign-in goes: the start view (accounts/views/single_sign_on.py) sends the
browser to the provider with a fresh state, nonce and PKCE challenge kept in
the session; the provider sends it back to the callback with a code; here the
code is exchanged at the token endpoint with the client secret, the ID token's
RS256 signature is checked against the provider's published keys, and so are
its issuer, audience, expiry and nonce; the userinfo must be about the same
subject. Who that subject is in Strongroom is accounts/sso.py's business.

The provider's endpoints come from its discovery document, fetched at the
first sign-in and kept for the life of the process, never at start-up: a
provider that is down must not stop Strongroom from starting, nor its
break-glass users from signing in. Its keys are fetched at every sign-in, so
a key the provider rotates works at once.

Nothing here logs or raises a token, a code or the client secret."""

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

log = logging.getLogger(__name__)

EVERYONE = "everyone"
BREAK_GLASS_ONLY = "break-glass-only"
BACKEND = "accounts.oidc.SingleSignOnBackend"
# Clocks of the provider and of this host may differ a little.
CLOCK_SKEW_SECONDS = 60


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def password_sign_in_allowed(username: str) -> bool:
    """Whether `username` may sign in with a password: anyone, unless only the
    break-glass users may (STRONGROOM_PASSWORD_SIGN_IN=break-glass-only).
    User names compare exactly, as Django's sign-in does."""
    return settings.PASSWORD_SIGN_IN == EVERYONE or username in settings.BREAK_GLASS_USERS


def password_refusal(request: HttpRequest) -> str:
    """Why a password posted to the sign-in page is not even checked (nor
    counted as a failed attempt), or "" when it may be."""
    if request.method != "POST" or password_sign_in_allowed(request.POST.get("username", "")):
        return ""
    return (
        f"Passwords are kept for break-glass accounts here: use “Sign in with {settings.OIDC_PROVIDER_NAME}” instead."
    )


def issuer_host() -> str:
    return urlsplit(settings.OIDC_ISSUER).netloc


class SignInRefused(Exception):
    """A single sign-on that does not sign anyone in. `reason` is a short
    word for the log and the audit trail, `message` is for the person."""

    def __init__(self, reason: str, message: str, claims: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        # What the provider vouched for, once it did (an ID token that checked out).
        self.claims = dict(claims or {})


def unavailable(detail: str) -> SignInRefused:
    return SignInRefused(
        "provider_unavailable",
        f"Signing in with {settings.OIDC_PROVIDER_NAME} did not work just now ({detail}). "
        "Try again in a moment; if it keeps failing, tell an administrator.",
    )


def not_completed(reason: str) -> SignInRefused:
    return SignInRefused(
        reason,
        f"That sign-in with {settings.OIDC_PROVIDER_NAME} could not be completed: it was already used, "
        "it expired, or it was started in another browser. Sign in again.",
    )


# --- the provider's discovery document ------------------------------------------


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str  # "" when the provider has none: the ID token's claims are all there is


_discovered: dict[str, Provider] = {}
_discovery_lock = threading.Lock()


def provider() -> Provider:
    """The configured provider's endpoints, discovered once per process
    (again after a failure). Raises SignInRefused when it cannot be reached
    or its document does not fit."""
    issuer = settings.OIDC_ISSUER
    with _discovery_lock:
        if issuer not in _discovered:
            _discovered[issuer] = discover(issuer)
        return _discovered[issuer]


def discover(issuer: str) -> Provider:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("Single sign-on: %s did not give the provider's configuration: %s", url, exc)
        raise unavailable("it did not answer") from exc
    # OpenID Connect Discovery 1.0, section 4.3: the issuer in the document must
    # be the one asked for, or tokens could be taken from another provider.
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        log.error(
            "Single sign-on: %s names its issuer %r, not %r; set STRONGROOM_OIDC_ISSUER to the issuer exactly",
            url,
            found,
            issuer,
        )
        raise unavailable("its configuration names another issuer")
    missing = [key for key in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(key)]
    algorithms = document.get("id_token_signing_alg_values_supported") or [settings.OIDC_RP_SIGN_ALGO]
    if missing or settings.OIDC_RP_SIGN_ALGO not in algorithms:
        log.error(
            "Single sign-on: %s lacks %s",
            url,
            ", ".join(missing) or f"{settings.OIDC_RP_SIGN_ALGO} among its ID token signing algorithms",
        )
        raise unavailable("its configuration is incomplete")
    return Provider(
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks_uri=document["jwks_uri"],
        userinfo_endpoint=document.get("userinfo_endpoint") or "",
    )


def forget_provider() -> None:
    """Discovers again at the next sign-in (tests start providers at will)."""
    with _discovery_lock:
        _discovered.clear()


# --- authentication backends ------------------------------------------------------


class PasswordSignInPolicy:
    """Stands before ModelBackend: when only break-glass users may sign in with
    a password, anyone else's password is refused here, whichever page asked
    (the sign-in view says so in words first; this keeps the Django admin or
    any other caller of authenticate() from getting round it). Raising
    PermissionDenied stops every backend after this one. No get_user, nor
    any permission method: it never signs anyone in, and Django's
    force_login and permission checks pass over a backend without them."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, **credentials: Any) -> None:
        if "password" in credentials and not password_sign_in_allowed(username or ""):
            raise PermissionDenied
        return None


class SingleSignOnBackend(OIDCAuthenticationBackend):
    """The backend of the sessions single sign-on makes: Django finds the
    signed-in user through it on every request. It never authenticates
    through authenticate(), so a password can never reach the provider and
    a refused single sign-on is not counted by django-axes as a wrong
    password; the callback view calls `verified_claims` itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library reads the provider's endpoints here. Django makes a
        # backend for every request's user and every password sign-in, which
        # must not need them: they are set by `verified_claims`.
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: int) -> Any:
        # The library's own get_user skips is_active: a deactivated person's
        # session must end at their next request, as a password one does.
        return ModelBackend.get_user(self, user_id)

    def verified_claims(self, request: HttpRequest, nonce: str, code_verifier: str | None) -> dict[str, Any]:
        """What the provider vouches for about the person it sent back with
        the code in `request`: the ID token's claims, with the userinfo's."""
        found = provider()
        self.request = request
        self.OIDC_OP_TOKEN_ENDPOINT = found.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = found.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

        tokens = self.exchange_code(request, code_verifier)
        claims = self.verified_id_token(tokens.get("id_token"), nonce)
        if found.userinfo_endpoint and tokens.get("access_token"):
            claims = {**claims, **self.userinfo_about(claims["sub"], tokens["access_token"])}
        return claims

    def exchange_code(self, request: HttpRequest, code_verifier: str | None) -> dict[str, Any]:
        """The library's get_token, but with the client secret as HTTP basic
        (client_secret_basic, form-encoded first as RFC 6749 2.3.1 says) and
        an error that names the OAuth error alone, never the answer's body."""
        payload = {
            "client_id": self.OIDC_RP_CLIENT_ID,
            "grant_type": "authorization_code",
            "code": request.GET.get("code", ""),
            "redirect_uri": request.build_absolute_uri(reverse("oidc_authentication_callback")),
        }
        if code_verifier:
            payload["code_verifier"] = code_verifier
        try:
            response = requests.post(
                self.OIDC_OP_TOKEN_ENDPOINT,
                data=payload,
                auth=(quote_plus(self.OIDC_RP_CLIENT_ID), quote_plus(self.OIDC_RP_CLIENT_SECRET)),
                timeout=settings.OIDC_TIMEOUT,
            )
        except requests.RequestException as exc:
            log.warning("Single sign-on: the token endpoint did not answer: %s", type(exc).__name__)
            raise unavailable("it did not answer") from exc
        if response.status_code != 200:
            # The OAuth error code and description only: the body of an error carries no token.
            error = token_error(response)
            log.warning("Single sign-on: the token endpoint refused the code (%s): %s", response.status_code, error)
            if error.startswith("invalid_grant"):
                raise not_completed("code_refused")
            raise unavailable(f"the provider refused Strongroom: {error[:100]}")
        try:
            tokens = response.json()
        except ValueError as exc:
            raise unavailable("its answer was not JSON") from exc
        if not isinstance(tokens, dict) or not tokens.get("id_token"):
            raise unavailable("its answer held no ID token")
        return tokens

    def verified_id_token(self, id_token: str | None, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token or "")
            if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
                raise jwt.InvalidAlgorithmError(f"signed {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO}")
            key = self.retrieve_matching_jwk(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token or "",
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except requests.RequestException as exc:
            log.warning("Single sign-on: the provider's keys could not be fetched: %s", type(exc).__name__)
            raise unavailable("its keys could not be fetched") from exc
        except (jwt.PyJWTError, SuspiciousOperation, KeyError, ValueError) as exc:
            log.warning("Single sign-on: the ID token was refused: %s", exc)
            raise SignInRefused(
                "id_token", f"{settings.OIDC_PROVIDER_NAME} sent back an answer that Strongroom cannot trust."
            ) from exc
        # OpenID Connect Core 3.1.3.7: with several audiences, the token must be for us.
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            log.warning("Single sign-on: the ID token was issued to %r, not to this client", claims.get("azp"))
            raise SignInRefused("id_token", f"{settings.OIDC_PROVIDER_NAME} sent back a sign-in meant for another app.")
        # The nonce ties the token to the sign-in this browser started: a token
        # taken from another sign-in (a replayed or injected code) is refused.
        if not constant_time_compare(str(claims.get("nonce") or ""), nonce):
            log.warning("Single sign-on: the ID token's nonce is not the one this sign-in sent")
            raise not_completed("nonce")
        return claims

    def userinfo_about(self, subject: str, access_token: str) -> dict[str, Any]:
        try:
            userinfo = self.get_userinfo(access_token, None, None)
        except (requests.RequestException, ValueError, SuspiciousOperation, jwt.PyJWTError) as exc:
            log.warning("Single sign-on: the userinfo endpoint failed: %s", type(exc).__name__)
            raise unavailable("it did not say who you are") from exc
        # OpenID Connect Core 5.3.2: the userinfo's sub must be the ID token's.
        if not isinstance(userinfo, dict) or userinfo.get("sub") != subject:
            log.warning("Single sign-on: the userinfo is about another subject than the ID token")
            raise SignInRefused(
                "userinfo", f"{settings.OIDC_PROVIDER_NAME} gave two different answers about who you are."
            )
        return userinfo


def token_error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no error given"
    if not isinstance(body, dict):
        return "no error given"
    return " ".join(str(body.get(key, ""))[:200] for key in ("error", "error_description")).strip() or "no error given"
