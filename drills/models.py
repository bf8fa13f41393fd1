"""Disaster-recovery drills: the backup guide's testing schedule per source
(monthly checksum verification, quarterly partial restore test, yearly full
restore drill), run automatically as scratch restores or recorded by hand,
each with its measured time against the source's RTO."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Backup, Source, Verification


class DrillSchedule(models.Model):
    """How often each kind of drill is due for one source."""

    source = models.OneToOneField(Source, models.CASCADE, related_name="drill_schedule")
    checksum_every_days = models.PositiveIntegerField("checksum verification every (days)", default=30)
    partial_every_days = models.PositiveIntegerField("partial restore test every (days)", default=91)
    full_every_days = models.PositiveIntegerField("full restore drill every (days)", default=365)
    automatic = models.BooleanField("run due drills automatically", default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"DR drill schedule of {self.source}"


class Drill(models.Model):
    CHECKSUM, PARTIAL, FULL = "checksum", "partial", "full"
    KIND_CHOICES = [
        (CHECKSUM, "Checksum verification"),
        (PARTIAL, "Partial restore test"),
        (FULL, "Full restore drill"),
    ]
    AUTOMATIC, MANUAL = "automatic", "manual"
    HOW_CHOICES = [(AUTOMATIC, "Run by Strongroom"), (MANUAL, "Recorded by hand")]
    QUEUED, RUNNING, PASSED, FAILED = "queued", "running", "passed", "failed"
    STATUS_CHOICES = [(QUEUED, "Queued"), (RUNNING, "Running"), (PASSED, "Passed"), (FAILED, "Failed")]
    ACTIVE_STATUSES = (QUEUED, RUNNING)

    source = models.ForeignKey(Source, models.CASCADE, related_name="drills")
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    how = models.CharField(max_length=20, choices=HOW_CHOICES, default=AUTOMATIC)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    backup = models.ForeignKey(Backup, models.SET_NULL, null=True, blank=True, related_name="drills")
    verification = models.ForeignKey(Verification, models.SET_NULL, null=True, blank=True, related_name="drills")
    restore_job = models.ForeignKey("restore.RestoreJob", models.SET_NULL, null=True, blank=True, related_name="drills")
    performed_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    performed_at = models.DateTimeField("when the drill took place", default=timezone.now, db_index=True)
    seconds = models.FloatField("measured time (seconds)", null=True, blank=True)
    rto_minutes = models.PositiveIntegerField(null=True, blank=True)  # the source's RTO target at the time
    notes = models.TextField(blank=True)
    summary = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-performed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.source} on {self.performed_at:%Y-%m-%d}"

    def within_rto(self) -> bool | None:
        """True/False against the RTO target it was measured against; None when either is unknown."""
        if self.seconds is None or not self.rto_minutes:
            return None
        return self.seconds <= self.rto_minutes * 60
