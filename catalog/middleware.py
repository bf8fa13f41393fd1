from django.contrib.auth.views import redirect_to_login

# Reachable without logging in (the admin has its own login); everything else
# redirects to the login page. The API and /metrics check their own bearer
# tokens (or the metrics allow-list) and answer 401 rather than redirect.
PUBLIC_PREFIXES = ("/login/", "/static/", "/admin/", "/healthz", "/api/", "/metrics")


class LoginRequiredEverywhere:
    """Anonymous visitors see only the login page, whatever the URL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)
