"""What monitoring records: each source status change, each open or resolved
problem, the channels that hear about them and every attempt to tell them."""

from django.db import models
from django.urls import reverse
from django.utils import timezone

from catalog.models import HEALTH_CHOICES, SealedSecrets


class StatusChange(models.Model):
    """A source's health changed. Written before any alert is sent, so the
    timeline is complete even when every channel is down."""

    source = models.ForeignKey("catalog.Source", models.CASCADE, related_name="status_changes")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    old_status = models.CharField(max_length=20, choices=HEALTH_CHOICES)
    new_status = models.CharField(max_length=20, choices=HEALTH_CHOICES)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source}: {self.old_status} → {self.new_status}"


class Alert(models.Model):
    """One problem, open until the condition clears. (kind, key) names the
    problem, so the same open problem is never alerted twice."""

    SOURCE_HEALTH = "source_health"  # a source is down or failing
    BACKUP_PARTIAL = "backup_partial"
    VERIFICATION_FAILED = "verification_failed"
    RESTORE_FAILED = "restore_failed"
    STORAGE_FULL = "storage_full"
    SIZE_ANOMALY = "size_anomaly"
    THREE_TWO_ONE = "three_two_one"
    STUCK_JOB = "stuck_job"
    DRILL_OVERDUE = "drill_overdue"  # a source's monthly/quarterly/yearly DR drill is past due
    KEY_ROTATION_DUE = "key_rotation_due"  # the active master key is older than the rotation period
    WAL_RECEIVER = "wal_receiver"  # continuous protection on, but its pg_receivewal is not running
    WAL_GAP = "wal_gap"  # a WAL segment is missing between the oldest retained base backup and now
    WAL_LATE = "wal_late"  # no WAL segment stored for longer than expected (the live RPO)
    RETENTION_FAILED = "retention_failed"  # a plan's retention rule could not be applied in full
    KIND_CHOICES = [
        (SOURCE_HEALTH, "Source down or failing"),
        (BACKUP_PARTIAL, "Backup partial"),
        (VERIFICATION_FAILED, "Verification failed"),
        (RESTORE_FAILED, "Restore failed"),
        (STORAGE_FULL, "Storage above 80 %"),
        (SIZE_ANOMALY, "Unusual backup size"),
        (THREE_TWO_ONE, "3-2-1 not met"),
        (STUCK_JOB, "Stuck job"),
        (DRILL_OVERDUE, "DR drill overdue"),
        (KEY_ROTATION_DUE, "Master key due for rotation"),
        (WAL_RECEIVER, "WAL receiver not running"),
        (WAL_GAP, "WAL continuity broken"),
        (WAL_LATE, "WAL archiving behind"),
        (RETENTION_FAILED, "Retention failed"),
    ]
    CRITICAL, WARNING = "critical", "warning"
    SEVERITY_CHOICES = [(CRITICAL, "Critical"), (WARNING, "Warning")]

    kind = models.CharField(max_length=40, choices=KIND_CHOICES, db_index=True)
    key = models.CharField(max_length=100, help_text="what the problem is about, e.g. source:3 or destination:2")
    source = models.ForeignKey("catalog.Source", models.CASCADE, null=True, blank=True, related_name="alerts")
    severity = models.CharField(max_length=20, choices=SEVERITY_CHOICES, default=CRITICAL)
    title = models.CharField(max_length=200)
    detail = models.CharField(max_length=1000, blank=True)
    url = models.CharField(max_length=300, blank=True, help_text="path of the page that shows the problem")
    opened_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)
    resolution = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(resolved_at__isnull=True), name="one_open_alert_per_problem"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def is_open(self) -> bool:
        return self.resolved_at is None


class Channel(SealedSecrets):
    """Where alerts go. Secrets (Slack URL, HMAC secret, PagerDuty routing key)
    are sealed in `secret_token` and never shown again."""

    EMAIL, SLACK, WEBHOOK, PAGERDUTY, APPRISE = "email", "slack", "webhook", "pagerduty", "apprise"
    KIND_CHOICES = [
        (EMAIL, "Email"),
        (SLACK, "Slack incoming webhook"),
        (WEBHOOK, "Webhook (JSON, HMAC-signed)"),
        (PAGERDUTY, "PagerDuty Events API v2"),
        (APPRISE, "Apprise (Telegram, Discord, Teams, ntfy …)"),
    ]
    # Events a channel can subscribe to: every Alert kind, plus recoveries.
    RECOVERY = "recovery"
    EVENT_CHOICES = Alert.KIND_CHOICES + [(RECOVERY, "Recovery (problem resolved)")]

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    email_to = models.CharField("send to", max_length=500, blank=True, help_text="comma-separated addresses")
    url = models.CharField("URL", max_length=500, blank=True, help_text="webhook URL (not secret)")
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("channel_detail", args=[self.pk])

    def wants(self, event: str) -> bool:
        """Whether this channel is told about `event` (an Alert kind or RECOVERY)."""
        return self.enabled and event in self.events


class Notification(models.Model):
    """One attempt to tell a channel about an alert (or a test message)."""

    OPENED, RESOLVED, TEST = "opened", "resolved", "test"
    EVENT_CHOICES = [(OPENED, "Problem"), (RESOLVED, "Recovery"), (TEST, "Test")]
    SENT, FAILED = "sent", "failed"
    STATUS_CHOICES = [(SENT, "Sent"), (FAILED, "Failed")]

    channel = models.ForeignKey(Channel, models.CASCADE, related_name="notifications")
    alert = models.ForeignKey(Alert, models.CASCADE, null=True, blank=True, related_name="notifications")
    event = models.CharField(max_length=20, choices=EVENT_CHOICES)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES)
    attempts = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A task delivered twice must not notify twice.
            models.UniqueConstraint(
                fields=["channel", "alert", "event"],
                condition=models.Q(alert__isnull=False),
                name="one_notification_per_alert_event",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.event} {self.status}"
