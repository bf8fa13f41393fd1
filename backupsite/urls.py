from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import sign_in
from catalog.api import urls as api_urls
from catalog.api.metrics import metrics
from pitr import urls as pitr_urls
from restore import urls as restore_urls

urlpatterns = [
    # The password, then a code for those with two-factor (accounts/two_factor.py).
    path("login/", sign_in.sign_in, name="login"),
    # Browsers ask for /favicon.ico whatever the page links: the SVG icon in static/.
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True), name="favicon"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("restores/", include("restore.urls")),
    path("drills/", include("drills.urls")),
    path("compliance/", include("compliance.urls")),
    path("pitr/", include("pitr.urls")),
    path("", include("accounts.urls")),
    path("api/v1/", include(pitr_urls.api_urlpatterns)),
    path("api/v1/", include(restore_urls.api_urlpatterns)),
    path("api/v1/", include("catalog.api.urls")),
    path("api/", include(api_urls.compat_urlpatterns)),  # the guide's endpoints (catalog/api/compat.py)
    path("metrics", metrics, name="metrics"),
    path("", include("catalog.urls")),
]
