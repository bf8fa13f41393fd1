"""Restores in the Django admin: read-only, like the catalog's records
(catalog/admin.py); a restore is requested through the wizard or the API."""

from django.contrib import admin

from catalog.admin import ReadOnlyAdmin
from restore.models import RestoreJob


@admin.register(RestoreJob)
class RestoreJobAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "backup",
        "source",
        "target",
        "target_database",
        "mode",
        "status",
        "requested_by",
        "created_at",
    ]
    list_filter = ["status", "target", "mode", "source"]
    search_fields = ["target_database", "summary"]
