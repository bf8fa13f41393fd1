"""The JSON API, included at /api/v1/. Anything else under it is a JSON 404."""

from django.urls import path, re_path

from catalog.api import compat, views

urlpatterns = [
    path("status", views.status_resource, name="api_status"),
    path("backups", views.backups_resource, name="api_backups"),
    path("backups/<int:pk>", views.backup_resource, name="api_backup"),
    path("backups/<int:pk>/verify", views.verify_resource, name="api_backup_verify"),
    path("hosts", views.hosts_resource, name="api_hosts"),
    path("openapi.json", views.openapi_resource, name="api_openapi"),
    # The pitr app serves its own routes under /api/v1/ (pitr.urls.api_urlpatterns, included before these).
    re_path(r"^[\s\S]*$", views.not_found),  # [\s\S]: a path may hold a line break, which "." misses
]

# Included at /api/ (beside /api/v1/): the backup guide's own endpoints, aliases of the above (catalog/api/compat.py).
compat_urlpatterns = [
    path("backup/create", compat.backup_create_resource, name="api_backup_create"),
    path("cron/status", compat.cron_status_resource, name="api_cron_status"),
]
