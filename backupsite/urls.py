from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from catalog.api.metrics import metrics

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("restores/", include("restore.urls")),
    path("drills/", include("drills.urls")),
    path("compliance/", include("compliance.urls")),
    path("pitr/", include("pitr.urls")),
    path("api/v1/", include("catalog.api.urls")),
    path("metrics", metrics, name="metrics"),
    path("", include("catalog.urls")),
]
