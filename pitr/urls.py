from django.urls import path

from pitr import api_views, restore_views, views

urlpatterns = [
    # Continuous protection (pitr/views.py)
    path("sources/<int:pk>/protection/", views.protection_panel, name="pitr_protection"),
    path("sources/<int:pk>/protection/enable/", views.protection_enable, name="pitr_protection_enable"),
    path("sources/<int:pk>/protection/disable/", views.protection_disable, name="pitr_protection_disable"),
    # Point-in-time restores and the "Verify PITR" drill (pitr/restore_views.py)
    path("sources/<int:pk>/restore/", restore_views.restore_start, name="pitr_restore_start"),
    path("sources/<int:pk>/restore/plan/", restore_views.restore_plan, name="pitr_restore_plan"),
    path("sources/<int:pk>/drill/", restore_views.drill_start, name="pitr_drill_start"),
    path("restores/", restore_views.restore_list, name="pitr_restore_list"),
    path("restores/<int:pk>/", restore_views.restore_detail, name="pitr_restore_detail"),
    path("restores/<int:pk>/progress/", restore_views.restore_progress, name="pitr_restore_progress"),
    path("restores/<int:pk>/cancel/", restore_views.restore_cancel, name="pitr_restore_cancel"),
    path("restores/<int:pk>/stop-server/", restore_views.restore_stop_server, name="pitr_restore_stop_server"),
]

# Under /api/v1/ (backupsite/urls.py includes them before the catalog's API, which
# ends in a catch-all JSON 404): archive_command pushes of continuous protection,
# and point-in-time restores (pitr/api_views.py).
api_urlpatterns = [
    path("sources/<int:pk>/wal/<str:name>", views.wal_push_resource, name="pitr_wal_push"),
    path("sources/<int:pk>/pitr-restores", api_views.pitr_restores_resource, name="api_pitr_restores"),
    path("pitr-restores/<int:pk>", api_views.pitr_restore_resource, name="api_pitr_restore"),
]
