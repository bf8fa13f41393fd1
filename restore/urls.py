from django.urls import path

from restore import api_views, views

urlpatterns = [
    path("", views.restore_list, name="restore_list"),
    path("new/", views.start, name="restore_start"),
    path("new/backups/", views.backup_choices, name="restore_backup_choices"),
    path("new/<slug:step>/", views.step, name="restore_step"),
    path("<int:pk>/", views.restore_detail, name="restore_detail"),
    path("<int:pk>/progress/", views.restore_progress, name="restore_progress"),
    path("<int:pk>/cancel/", views.restore_cancel, name="restore_cancel"),
]

# Under /api/v1/ (backupsite/urls.py includes them before the catalog's API, which
# ends in a catch-all JSON 404): restores of backups (restore/api_views.py).
api_urlpatterns = [
    path("restores", api_views.restores_resource, name="api_restores"),
    path("restores/<int:pk>", api_views.restore_resource, name="api_restore"),
]
