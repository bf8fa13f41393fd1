from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from catalog import audit
from catalog.api.auth import error, token_from_request

# Reachable without logging in (the admin has its own login); everything else
# redirects to the login page. The API and /metrics check their own bearer
# tokens (or the metrics allow-list) and answer 401 rather than redirect.
PUBLIC_PREFIXES = ("/login/", "/static/", "/favicon.ico", "/admin/", "/healthz", "/readyz", "/api/", "/metrics")

# What a middleware wraps: the next one, or the view.
GetResponse = Callable[[HttpRequest], HttpResponseBase]


class LoginRequiredEverywhere:
    """Anonymous visitors see only the login page, whatever the URL."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.user.is_authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)


class ReadOnlyForViewers:
    """Only administrators (catalog.operate) change anything: a signed-in user
    without it gets 403 for any method but GET/HEAD/OPTIONS, before a view
    runs, so a read page that happens to accept a POST cannot become a write
    for auditors (tests/test_url_walk.py walks every URL). Logging in and out
    stays open. A request to the API that carries a valid API token is the
    API's to judge by that token's scopes (the session plays no part there);
    any other Authorization header, empty, malformed, unknown, revoked, or
    sent to a page outside the API, changes nothing. Under /account/ each
    person changes only their own account (their two-factor), whatever
    their role, so auditors may post there too."""

    OPEN_PATHS = ("/login/", "/logout/")
    OWN_ACCOUNT_PREFIX = "/account/"
    API_PREFIX = "/api/"

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if (
            request.method not in ("GET", "HEAD", "OPTIONS")
            and request.user.is_authenticated
            and not request.user.has_perm("catalog.operate")
            and request.path not in self.OPEN_PATHS
            and not request.path.startswith(self.OWN_ACCOUNT_PREFIX)
            and not self.api_request_with_valid_token(request)
        ):
            if request.path.startswith(self.API_PREFIX):
                return error(
                    "Only administrators change anything; send a valid API token "
                    "('Authorization: Bearer <token>') to act as the token instead.",
                    403,
                )
            raise PermissionDenied
        return self.get_response(request)

    def api_request_with_valid_token(self, request: HttpRequest) -> bool:
        if not request.path.startswith(self.API_PREFIX):
            return False
        token, _refusal = token_from_request(request)
        return token is not None


class AuditRequestIP:
    """Audit events record the address of the client whose request caused
    them. REMOTE_ADDR only: a forwarded header is whatever the client says,
    unless a trusted proxy rewrites REMOTE_ADDR itself."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        token = audit.current_ip.set(request.META.get("REMOTE_ADDR") or None)
        try:
            return self.get_response(request)
        finally:
            audit.current_ip.reset(token)
