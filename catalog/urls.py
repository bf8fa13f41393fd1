from django.urls import path

from catalog import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("sources/", views.source_list, name="source_list"),
    path("sources/new/", views.source_new, name="source_new"),
    path("sources/test/", views.source_test, name="source_test"),
    path("sources/<int:pk>/", views.source_detail, name="source_detail"),
    path("sources/<int:pk>/edit/", views.source_edit, name="source_edit"),
    path("sources/<int:pk>/delete/", views.source_delete, name="source_delete"),
    path("destinations/", views.destination_list, name="destination_list"),
    path("destinations/new/", views.destination_new, name="destination_new"),
    path("destinations/test/", views.destination_test, name="destination_test"),
    path("destinations/<int:pk>/", views.destination_detail, name="destination_detail"),
    path("destinations/<int:pk>/edit/", views.destination_edit, name="destination_edit"),
    path("destinations/<int:pk>/delete/", views.destination_delete, name="destination_delete"),
    path("plans/", views.plan_list, name="plan_list"),
    path("plans/new/", views.plan_new, name="plan_new"),
    path("plans/cron-preview/", views.cron_preview, name="cron_preview"),
    path("plans/<int:pk>/", views.plan_detail, name="plan_detail"),
    path("plans/<int:pk>/edit/", views.plan_edit, name="plan_edit"),
    path("plans/<int:pk>/delete/", views.plan_delete, name="plan_delete"),
    path("plans/<int:pk>/run/", views.plan_run, name="plan_run"),
    path("backups/", views.backup_list, name="backup_list"),
    path("backups/<int:pk>/", views.backup_detail, name="backup_detail"),
    path("backups/<int:pk>/progress/", views.backup_progress, name="backup_progress"),
    path("backups/<int:pk>/cancel/", views.backup_cancel, name="backup_cancel"),
    path("audit/", views.audit_list, name="audit_list"),
]
