"""django-axes for the test client (tests/settings.py)."""

from axes.backends import AxesStandaloneBackend


class AxesBackendForTestClient(AxesStandaloneBackend):
    """Django's `Client.login()` authenticates without a request, which axes
    refuses with an exception. Sign-ins that come as requests (a POST to
    /login/, the browser) always carry one and are counted as in production;
    a request-less `Client.login()` is left to ModelBackend."""

    def authenticate(self, request=None, *args, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)
