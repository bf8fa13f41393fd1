"""Restore jobs: what was restored, where to, how, who confirmed it, and each
step with its timing and outcome."""

import threading

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from catalog.engine import pgglobals
from catalog.models import DIRECTORY_FORMAT, Backup, Job, RestoreServer, Source
from catalog.text import count_text


class RestoreJob(Job):
    NEW, EXISTING = "new", "existing"
    TARGET_CHOICES = [(NEW, "A new database"), (EXISTING, "The existing source database")]
    PREVIEW, MERGE, FULL = "preview", "merge", "full"
    MODE_CHOICES = [
        (PREVIEW, "Preview: compare, change nothing"),
        (MERGE, "Merge: add rows missing from the target"),
        (FULL, "Full: replace with the backup's contents"),
    ]
    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUS_CHOICES = [(s, s.capitalize()) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE_STATUSES = (QUEUED, RUNNING)

    backup = models.ForeignKey(Backup, models.PROTECT, related_name="restores")
    source = models.ForeignKey(Source, models.PROTECT, related_name="restores")
    target = models.CharField(max_length=20, choices=TARGET_CHOICES, default=NEW)
    # Where a new database goes: a registered server, or (null) the source's
    # own. Protected: a finished restore's record must keep saying where it went.
    restore_server = models.ForeignKey(RestoreServer, models.PROTECT, null=True, blank=True, related_name="restores")
    target_database = models.CharField(max_length=63)
    tables = models.JSONField(default=list, blank=True, help_text="schema.table names; empty means everything")
    mode = models.CharField(max_length=20, choices=MODE_CHOICES, default=FULL)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    confirmed_name = models.CharField(max_length=63, blank=True)
    without_owners = models.BooleanField(
        default=False, help_text="Objects belong to the restoring role and carry no grants, instead of the backup's."
    )
    create_missing_roles = models.BooleanField(
        default=False,
        help_text="Roles the backup names that the target server lacks are created first, from the "
        "backup's globals (no password, no superuser).",
    )
    terminate_connections = models.BooleanField(
        default=False, help_text="A whole-database replace ends the sessions still open on the database."
    )
    safety_backup = models.ForeignKey(Backup, models.SET_NULL, null=True, blank=True, related_name="+")
    steps = models.JSONField(default=list, blank=True)
    report = models.JSONField(default=dict, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    # Not a field: set on the running job by restore.services.restore_to_scratch (the
    # backup's recorded database properties); kept out of the report, as settings may say more.
    recorded_database: pgglobals.Properties | None
    # Not a field: the running job's cancel request (jobs.JobWatch), for work
    # that can stop in the middle of a step (a MariaDB restore's load).
    cancel_event: threading.Event | None = None

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Restore #{self.pk} of backup #{self.backup_id}"

    def get_absolute_url(self) -> str:
        return reverse("restore_detail", args=[self.pk])

    def changes_existing_database(self) -> bool:
        return self.target == self.EXISTING and self.mode != self.PREVIEW

    def restores_schema(self) -> bool:
        """A new database or a whole replace: the backup's schema comes back,
        with its owners and grants unless asked otherwise."""
        return self.target == self.NEW or self.replaces_whole_database()

    def kept_database_name(self) -> str:
        """What a whole-database replace renames the replaced database to."""
        return f"{self.target_database}_before_restore_{self.pk}"[:63]

    def replaces_whole_database(self) -> bool:
        return self.target == self.EXISTING and self.mode == self.FULL and not self.tables

    def keeps_owners(self) -> bool:
        """Whether the backup's owners and grants come back (and so its roles
        must exist on the server). Only where the backup's schema comes back
        (a table-level restore moves rows into tables that keep their own),
        except from a plain SQL dump, which sets them itself whatever we ask."""
        if not self.ownership() or self.source.engine == "mariadb":  # definers, not roles (restore/mariadb.py)
            return False
        return self.backup.format == "plain" or (self.restores_schema() and not self.without_owners)

    def owners_optional(self) -> bool:
        """pg_restore can leave owners and grants out of a custom-, tar- or
        directory-format dump (tar: an imported one); psql cannot, of a plain
        one. A MariaDB dump's definers can become the restoring user's."""
        return self.backup.format in ("custom", "tar", DIRECTORY_FORMAT, "mariadb")

    def ownership(self) -> str:
        if self.source.engine == "sqlite" or self.backup.is_export():
            return ""
        if self.source.engine == "mariadb":
            if self.without_owners:
                return " Views, triggers, routines and events will be defined by the user Strongroom connects as."
            return " Views, triggers, routines and events keep the users that defined them."
        if self.without_owners:
            return " Objects will belong to the role Strongroom connects as, with no grants."
        if self.create_missing_roles:
            return (
                " Roles the server lacks are first created from the backup (no password; never superuser); "
                "owners and grants come back as they were."
            )
        return " Owners and grants come back as they were."

    def left_out(self) -> str:
        """What a restore of chosen tables does not bring, said before it starts."""
        if not self.tables or self.source.engine != "mariadb":
            return ""
        return (
            " Their rows, indexes and triggers come back; views, routines and events do not, and foreign keys to "
            "tables not chosen are dropped."
        )

    def action_label(self) -> str:
        """The review's button: what pressing it does, in a few words."""
        if self.target == self.NEW:
            return f"Restore into a new {'file' if self.source.engine == 'sqlite' else 'database'}"
        if self.mode == self.PREVIEW:
            return "Preview differences"
        if self.tables:
            tables = count_text(len(self.tables), "table")
        elif self.backup.is_export():
            tables = f"the {count_text(len(self.backup.table_counts), 'exported table')}"
        else:
            tables = "the whole database"
        if self.mode == self.MERGE:
            return f"Merge missing rows into {tables}"
        return f"Replace {tables}"

    def describe(self) -> str:
        """What will happen, in plain words, for the confirmation step and the log."""
        everything = (
            f"the {count_text(len(self.backup.table_counts), 'table')} of the export"
            if self.backup.is_export()
            else "the whole database"
        )
        scope = (
            f"{len(self.tables)} table{'s' if len(self.tables) != 1 else ''} ({', '.join(self.tables)})"
            if self.tables
            else everything
        )
        when = self.backup.created_at.strftime("%Y-%m-%d %H:%M")
        origin = f"backup #{self.backup_id} of {when}"
        if self.target == self.NEW:
            where = f" on server {self.restore_server.name}" if self.restore_server else ""
            kind = "file" if self.source.engine == "sqlite" else "database"
            return (
                f"Restore {scope} from {origin} into a new {kind} `{self.target_database}`{where}."
                f"{self.left_out()}{self.ownership()}"
            )
        if self.mode == self.PREVIEW:
            return (
                f"Compare {scope} of `{self.target_database}` with {origin}; "
                f"nothing in `{self.target_database}` is changed."
            )
        if self.mode == self.MERGE:
            return (
                f"Add to {scope} of `{self.target_database}` the rows of {origin} that it no longer has; "
                "rows it has are left as they are. A safety backup is taken first."
            )
        their = "its" if len(self.tables) == 1 else "their"
        if not self.tables:
            sessions = (
                " Sessions still open on it are ended."
                if self.terminate_connections
                else " It must have no open session."
            )
            return (
                f"Replace the whole database `{self.target_database}` with {origin}; the current database is "
                "kept under another name. A safety backup is taken first." + sessions + self.ownership()
            )
        return (
            f"Replace {scope} of `{self.target_database}` with {their} contents from {origin}. "
            "A safety backup is taken first."
        )
