from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from catalog import audit

# Reachable without logging in (the admin has its own login); everything else
# redirects to the login page. The API and /metrics check their own bearer
# tokens (or the metrics allow-list) and answer 401 rather than redirect.
PUBLIC_PREFIXES = ("/login/", "/static/", "/favicon.ico", "/admin/", "/healthz", "/api/", "/metrics")


class LoginRequiredEverywhere:
    """Anonymous visitors see only the login page, whatever the URL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)


class ReadOnlyForViewers:
    """Only administrators (catalog.operate) change anything: a signed-in user
    without it gets 403 for any method but GET/HEAD/OPTIONS, before a view
    runs, so a read page that happens to accept a POST cannot become a write
    for auditors (tests/test_url_walk.py walks every URL). Logging in and out
    stays open; a request with an Authorization header is the API's to judge
    by its token."""

    OPEN_PATHS = ("/login/", "/logout/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (request.method not in ("GET", "HEAD", "OPTIONS") and request.user.is_authenticated
                and not request.user.has_perm("catalog.operate") and request.path not in self.OPEN_PATHS
                and "HTTP_AUTHORIZATION" not in request.META):
            raise PermissionDenied
        return self.get_response(request)


class AuditRequestIP:
    """Audit events record the address of the client whose request caused
    them. REMOTE_ADDR only: a forwarded header is whatever the client says,
    unless a trusted proxy rewrites REMOTE_ADDR itself."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = audit.current_ip.set(request.META.get("REMOTE_ADDR") or None)
        try:
            return self.get_response(request)
        finally:
            audit.current_ip.reset(token)
