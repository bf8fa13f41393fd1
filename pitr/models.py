"""Point-in-time recovery: continuous WAL protection of a PostgreSQL source,
the WAL segments Strongroom holds, physical base backups' WAL bounds, and
restores to a moment.

Base backups themselves are catalog Backups (format "basebackup") taken by a
plan of the source, so they share the pipeline, destinations, verification
and retention with dumps; BaseBackupWal records the WAL each one needs."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Backup, Destination, Job, Source


class ContinuousProtection(models.Model):
    """Continuous WAL archiving of one source, by a supervised pg_receivewal
    on a replication slot (STREAM) or pushed by the server's archive_command
    (ARCHIVE)."""

    STREAM, ARCHIVE = "stream", "archive"
    MODE_CHOICES = [
        (STREAM, "Streaming: pg_receivewal on a replication slot"),
        (ARCHIVE, "Pushed by the server's archive_command"),
    ]

    source = models.OneToOneField(Source, models.CASCADE, related_name="protection")
    enabled = models.BooleanField(default=False)
    mode = models.CharField(max_length=20, choices=MODE_CHOICES, default=STREAM)
    slot_name = models.CharField(max_length=63, blank=True)
    destinations = models.ManyToManyField(Destination, related_name="wal_protections")
    compression = models.CharField(max_length=10, default="zstd")
    encrypt = models.BooleanField(default=True)
    recovery_window_days = models.PositiveIntegerField("recovery window (days)", default=14)
    # The receiver, as its supervisor last saw it.
    receiver_pid = models.PositiveIntegerField(null=True, blank=True)
    receiver_host = models.CharField(max_length=200, blank=True)
    receiver_started_at = models.DateTimeField(null=True, blank=True)
    receiver_heartbeat_at = models.DateTimeField(null=True, blank=True)
    receiver_restarts = models.PositiveIntegerField(default=0)
    receiver_error = models.CharField(max_length=500, blank=True)
    last_segment_name = models.CharField(max_length=64, blank=True)
    last_segment_at = models.DateTimeField(null=True, blank=True)  # when the newest segment was stored
    slot_lag_bytes = models.BigIntegerField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)  # the last prerequisites check
    check_report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Continuous protection of {self.source}"


class WalSegment(models.Model):
    """One WAL file (a segment, or a timeline history file) stored by
    Strongroom, through the same pipeline as backups."""

    # PARTIAL: the segment still being written, shipped again as it grows so
    # that the recovery point is seconds old, not one whole segment old.
    SEGMENT, HISTORY, PARTIAL = "segment", "history", "partial"
    KIND_CHOICES = [(SEGMENT, "WAL segment"), (HISTORY, "Timeline history"), (PARTIAL, "Partial segment")]
    STORED, PRUNED = "stored", "pruned"
    STATUS_CHOICES = [(STORED, "Stored"), (PRUNED, "Pruned")]

    source = models.ForeignKey(Source, models.CASCADE, related_name="wal_segments")
    name = models.CharField(max_length=64)  # e.g. 000000010000000000000003, 00000002.history
    kind = models.CharField(max_length=20, choices=KIND_CHOICES, default=SEGMENT)
    timeline = models.PositiveIntegerField(default=1)
    # The segment's position in the WAL stream (log id × segments per log + segment number),
    # so that gaps are found by arithmetic; null for history files.
    position = models.BigIntegerField(null=True, blank=True, db_index=True)
    size = models.BigIntegerField(default=0)  # plain bytes
    stored_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)  # of the stored object
    compression = models.CharField(max_length=10, blank=True)
    encrypted = models.BooleanField(default=True)
    key_id = models.CharField(max_length=64, blank=True)
    key_wraps = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=STORED, db_index=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    pruned_at = models.DateTimeField(null=True, blank=True)
    prune_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["source", "timeline", "position", "name"]
        constraints = [models.UniqueConstraint(fields=["source", "name"], name="one_wal_file_per_source_and_name")]

    def __str__(self) -> str:
        return self.name


class WalCopy(models.Model):
    """A WAL file's object at one destination."""

    PENDING, DURABLE, FAILED, PRUNED = "pending", "durable", "failed", "pruned"
    STATUS_CHOICES = [(PENDING, "Pending"), (DURABLE, "Durable"), (FAILED, "Failed"), (PRUNED, "Pruned")]

    segment = models.ForeignKey(WalSegment, models.CASCADE, related_name="copies")
    destination = models.ForeignKey(Destination, models.PROTECT, related_name="wal_copies")
    key = models.CharField(max_length=1000)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=PENDING)
    size = models.BigIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    durable_at = models.DateTimeField(null=True, blank=True)
    pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "destination"], name="one_wal_copy_per_destination")]

    def __str__(self) -> str:
        # As a backup's Copy says itself: where, and under which key.
        return f"{self.destination}: {self.key}"


class BaseBackupWal(models.Model):
    """The WAL a physical base backup needs to reach consistency: from its
    start to its end segment. It counts as good only once all are stored."""

    backup = models.OneToOneField(Backup, models.CASCADE, related_name="base_wal")
    timeline = models.PositiveIntegerField(default=1)
    start_lsn = models.CharField(max_length=32)
    end_lsn = models.CharField(max_length=32, blank=True)
    start_segment = models.CharField(max_length=64)
    end_segment = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)  # the backup's checkpoint time
    finished_at = models.DateTimeField(null=True, blank=True)  # consistent from here on
    wal_complete_at = models.DateTimeField(null=True, blank=True)  # every needed segment stored

    def __str__(self) -> str:
        return f"WAL {self.start_segment}–{self.end_segment} of backup #{self.backup_id}"


class PitrRestore(Job):
    """A restore to a point in time into a new data directory (or a drill
    into a scratch one), started on a port and promoted at the target."""

    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUS_CHOICES = [
        (QUEUED, "Queued"),
        (RUNNING, "Running"),
        (SUCCEEDED, "Succeeded"),
        (FAILED, "Failed"),
        (CANCELLED, "Cancelled"),
    ]
    ACTIVE_STATUSES = (QUEUED, RUNNING)
    TIME, LATEST, RESTORE_POINT = "time", "latest", "restore_point"
    TARGET_CHOICES = [(TIME, "A moment"), (LATEST, "The latest possible"), (RESTORE_POINT, "A named restore point")]

    source = models.ForeignKey(Source, models.CASCADE, related_name="pitr_restores")
    base_backup = models.ForeignKey(Backup, models.PROTECT, null=True, blank=True, related_name="pitr_restores")
    target_kind = models.CharField(max_length=20, choices=TARGET_CHOICES, default=TIME)
    target_time = models.DateTimeField(null=True, blank=True)
    restore_point = models.CharField(max_length=64, blank=True)
    wal_from = models.CharField(max_length=64, blank=True)
    wal_to = models.CharField(max_length=64, blank=True)
    data_directory = models.CharField(max_length=1000, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    # The host whose disk holds data_directory and which runs the restored
    # server: chosen for a restore (its own queue takes the job), the host
    # that ran it for a drill. Blank in restores made before there were hosts.
    host = models.CharField(max_length=64, blank=True)
    is_drill = models.BooleanField(default=False)  # "verify PITR": into a scratch directory, removed afterwards
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    phase = models.CharField(max_length=40, blank=True)
    recovered_to = models.DateTimeField(null=True, blank=True)  # the last transaction's commit time replayed
    report = models.JSONField(default=dict, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Point-in-time restore #{self.pk} of {self.source}"

    def server_running(self) -> bool:
        """The restored server the wizard started is up (a drill's is removed)."""
        return self.status == self.SUCCEEDED and not self.is_drill and not self.report.get("stopped_at")
