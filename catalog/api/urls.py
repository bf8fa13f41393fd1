"""The JSON API, included at /api/v1/. Anything else under it is a JSON 404."""

from django.urls import path, re_path

from catalog.api import views

urlpatterns = [
    path("status", views.status, name="api_status"),
    path("backups", views.backups, name="api_backups"),
    path("backups/<int:pk>", views.backup, name="api_backup"),
    path("backups/<int:pk>/verify", views.verify, name="api_backup_verify"),
    path("openapi.json", views.openapi, name="api_openapi"),
    re_path(r"^.*$", views.not_found),
]
