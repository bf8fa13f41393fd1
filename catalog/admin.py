"""Superusers inspect every record here. Catalog records are read-only: they
change only through the services, which audit every change."""

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from catalog import rebuild
from catalog.alerts.models import Alert, Channel, Notification
from catalog.models import AuditEvent, Backup, BackupPlan, Copy, Destination, Key, Source, Verification

# The product's name, not "Django administration", on every admin page and tab.
admin.site.site_header = f"{settings.SITE_NAME} administration"
admin.site.site_title = f"{settings.SITE_NAME} admin"
admin.site.index_title = "Records (read-only)"  # changes go through the pages, which audit them


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Source)
class SourceAdmin(ReadOnlyAdmin):
    list_display = ["name", "engine", "target_display", "rpo_minutes", "rto_minutes"]
    exclude = ["secret_token"]


@admin.register(Destination)
class DestinationAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "location_display", "host", "offsite", "immutable_days", "quota_gb"]
    exclude = ["secret_token"]
    actions = ["import_backups"]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("catalog.operate")

    @admin.action(description="Import backups from their manifests (catalog rebuild)", permissions=["operate"])
    def import_backups(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        result = rebuild.rebuild(request.user, list(queryset))
        for destination, report in result.imports:
            level = messages.WARNING if report.refused else messages.SUCCESS
            self.message_user(request, f"{destination}: {report.summary()}", level)
            for key, reason in report.refused[:20]:
                self.message_user(request, f"Refused {key}: {reason}", messages.WARNING)
            for key, note in report.notes[:20]:
                self.message_user(request, f"Imported without {key}: {note}", messages.WARNING)
        for line in result.lines():
            self.message_user(request, line, messages.WARNING)


@admin.register(BackupPlan)
class BackupPlanAdmin(ReadOnlyAdmin):
    list_display = ["name", "source", "schedule", "format", "compression", "encrypt", "enabled"]


class CopyInline(admin.TabularInline):
    model = Copy
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Backup)
class BackupAdmin(ReadOnlyAdmin):
    list_display = ["id", "source", "plan", "label", "status", "created_at", "stored_bytes"]
    list_filter = ["status", "source", "trigger"]
    search_fields = ["label", "sha256"]
    inlines = [CopyInline]


@admin.register(Copy)
class CopyAdmin(ReadOnlyAdmin):
    list_display = ["backup", "destination", "status", "size", "durable_at"]
    list_filter = ["status", "destination"]


@admin.register(Verification)
class VerificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "backup", "source", "kind", "status", "trigger", "created_at", "summary"]
    list_filter = ["kind", "status", "source"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["title", "kind", "severity", "source", "opened_at", "resolved_at"]
    list_filter = ["kind", "severity", "resolved_at"]
    search_fields = ["title", "detail"]


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "enabled", "disabled_reason", "updated_at"]
    exclude = ["secret_token"]  # sealed Slack URL, webhook secret or routing key


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["channel", "event", "alert", "status", "attempts", "created_at", "error"]
    list_filter = ["status", "event", "channel"]


@admin.register(Key)
class KeyAdmin(ReadOnlyAdmin):
    list_display = ["key_id", "fingerprint", "is_active", "created_at", "retired_at"]
    exclude = ["sealed_key"]  # sealed, but nothing anyone needs to read either


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Strictly read-only: the trail is append-only and hash-chained (and on
    PostgreSQL a trigger refuses UPDATE and DELETE anyway)."""

    list_display = ["id", "created_at", "actor_label", "ip", "action", "object_repr"]
    actions = None  # not even the bulk "delete selected" action
    list_filter = ["action"]
    search_fields = ["object_repr", "actor_label"]


from catalog.api.models import ApiToken  # noqa: E402 — kept beside its admin, appended by the API part


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "prefix", "scopes", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at"]
    exclude = ["token_hash"]  # not the token, but nothing anyone needs to read either
