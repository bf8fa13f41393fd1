"""Superusers inspect drills here; like the catalog's records they are read-only
(drills change only through drills.services, which audits every change)."""

from django.contrib import admin

from catalog.admin import ReadOnlyAdmin
from drills.models import Drill, DrillSchedule


@admin.register(DrillSchedule)
class DrillScheduleAdmin(ReadOnlyAdmin):
    list_display = ["source", "checksum_every_days", "partial_every_days", "full_every_days", "automatic", "updated_at"]


@admin.register(Drill)
class DrillAdmin(ReadOnlyAdmin):
    list_display = ["source", "kind", "how", "status", "performed_at", "seconds", "rto_minutes"]
    list_filter = ["kind", "how", "status"]
