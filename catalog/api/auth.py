"""Bearer-token authentication for the JSON API (after Healthchecks'
hc/api/decorators.py): every view says which scope it needs and under which
name its uses are audited; errors are JSON with the right status code."""

from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, cast

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from catalog.api import tokens
from catalog.api.models import ApiToken

P = ParamSpec("P")


class ApiRequest(HttpRequest):
    """The request an API view is handed: `authorize` sets `api_token` to the
    bearer token it accepted before it calls the view. Only a type for the
    views' signatures; no request is ever made of this class."""

    api_token: ApiToken


def error(message: str, status: int, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def unauthorized(message: str, problem: str | None = None) -> JsonResponse:
    """401 with the challenge RFC 6750 asks for; `problem` is its error code."""
    challenge = 'Bearer realm="strongroom"' + (f', error="{problem}"' if problem else "")
    return error(message, 401, WWW_Authenticate=challenge)


def bearer_token(request: HttpRequest) -> tuple[str | None, JsonResponse | None]:
    """(raw token, None) or (None, the 401 response saying what is wrong)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.strip():
        return None, unauthorized("Authentication required: send the header 'Authorization: Bearer <token>'.")
    scheme, _, raw = header.strip().partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw or " " in raw:
        return None, unauthorized("Malformed Authorization header: expected 'Bearer <token>'.", "invalid_request")
    return raw, None


def token_from_request(request: HttpRequest) -> tuple[ApiToken | None, JsonResponse | None]:
    """(usable token, None) or (None, the 401 response)."""
    raw, refusal = bearer_token(request)
    if refusal:
        return None, refusal
    assert raw is not None  # bearer_token gives one or the other
    try:
        return tokens.authenticate(raw), None
    except tokens.TokenRejected as exc:
        return None, unauthorized(str(exc), "invalid_token")


# What `authorize` takes (a view of an ApiRequest) and what it gives back (a view of any request).
ApiView = Callable[Concatenate[ApiRequest, P], HttpResponse]
View = Callable[Concatenate[HttpRequest, P], HttpResponse]


def authorize(scope: str, endpoint: str) -> Callable[[ApiView[P]], View[P]]:
    """Lets through requests whose token has `scope`; records every
    authenticated use (also refused ones) as the audit action api.<endpoint>."""

    def decorator(view: ApiView[P]) -> View[P]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            token, refusal = token_from_request(request)
            if refusal:
                return refusal
            assert token is not None  # token_from_request gives one or the other
            # The same request object, made an ApiRequest by the attribute set on it here.
            api_request = cast(ApiRequest, request)
            api_request.api_token = token
            status = 500  # what the audit says if the view raises
            try:
                if token.has_scope(scope):
                    response = view(api_request, *args, **kwargs)
                elif scope in token.scopes:
                    owner = token.created_by.get_username() if token.created_by else "?"
                    response = error(
                        f"This API token belongs to {owner}, who is no longer an administrator: "
                        f"it may only read now, and this request needs the '{scope}' scope.",
                        403,
                        WWW_Authenticate=f'Bearer realm="strongroom", error="insufficient_scope", scope="{scope}"',
                    )
                else:
                    response = error(
                        f"This API token does not have the '{scope}' scope this request needs "
                        f"(it has: {', '.join(token.scopes) or 'none'}).",
                        403,
                        WWW_Authenticate=f'Bearer realm="strongroom", error="insufficient_scope", scope="{scope}"',
                    )
                status = response.status_code
                return response
            finally:
                tokens.record_use(token, endpoint, {"method": request.method, "path": request.path, "status": status})

        return wrapped

    return decorator


def by_method(**views: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """One URL, one view per HTTP method (each with its own scope); any
    other method gets a JSON 405 with the Allow header."""
    allowed = ", ".join(sorted(views))

    @csrf_exempt  # token requests carry no cookie a forger could ride on
    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        view = views.get(request.method or "")
        if view is None:
            return error(f"Method {request.method} is not allowed here; use {allowed}.", 405, Allow=allowed)
        return view(request, *args, **kwargs)

    return dispatch
