"""Bearer-token authentication for the JSON API (after Healthchecks'
hc/api/decorators.py): every view says which scope it needs and under which
name its uses are audited; errors are JSON with the right status code."""

from functools import wraps

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from catalog.api import tokens


def error(message, status, **headers):
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def unauthorized(message, problem=None):
    """401 with the challenge RFC 6750 asks for; `problem` is its error code."""
    challenge = 'Bearer realm="strongroom"' + (f', error="{problem}"' if problem else "")
    return error(message, 401, WWW_Authenticate=challenge)


def bearer_token(request):
    """(raw token, None) or (None, the 401 response saying what is wrong)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.strip():
        return None, unauthorized("Authentication required: send the header 'Authorization: Bearer <token>'.")
    scheme, _, raw = header.strip().partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw or " " in raw:
        return None, unauthorized("Malformed Authorization header: expected 'Bearer <token>'.", "invalid_request")
    return raw, None


def token_from_request(request):
    """(usable token, None) or (None, the 401 response)."""
    raw, refusal = bearer_token(request)
    if refusal:
        return None, refusal
    try:
        return tokens.authenticate(raw), None
    except tokens.TokenRejected as exc:
        return None, unauthorized(str(exc), "invalid_token")


def authorize(scope, endpoint):
    """Lets through requests whose token has `scope`; records every
    authenticated use (also refused ones) as the audit action api.<endpoint>."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            token, refusal = token_from_request(request)
            if refusal:
                return refusal
            request.api_token = token
            status = 500  # what the audit says if the view raises
            try:
                if token.has_scope(scope):
                    response = view(request, *args, **kwargs)
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


def by_method(**views):
    """One URL, one view per HTTP method (each with its own scope); any
    other method gets a JSON 405 with the Allow header."""
    allowed = ", ".join(sorted(views))

    @csrf_exempt  # token requests carry no cookie a forger could ride on
    def dispatch(request, *args, **kwargs):
        view = views.get(request.method)
        if view is None:
            return error(f"Method {request.method} is not allowed here; use {allowed}.", 405, Allow=allowed)
        return view(request, *args, **kwargs)

    return dispatch
