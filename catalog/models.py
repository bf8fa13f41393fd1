"""The backup catalog: what is protected, where copies live, and what ran."""

import itertools
import json
import shutil
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self, TypedDict
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from catalog import registry, retention
from catalog.engine.compression import DEFAULT_LEVELS
from catalog.engine.exports.archive import TableSpec
from catalog.engine.storage.base import Storage

ENGINE_CHOICES = [("postgresql", "PostgreSQL"), ("mariadb", "MariaDB or MySQL"), ("sqlite", "SQLite")]
# The port a server engine listens on unless told otherwise.
DEFAULT_PORTS = {"postgresql": 5432, "mariadb": 3306}
FORMAT_CHOICES = [
    ("custom", "PostgreSQL custom (pg_dump -Fc)"),
    # pg_dump's directory format, dumped by several jobs at once and stored as
    # one tar archive of its files (catalog.engine.dumpers.DirectoryDump).
    ("directory", "PostgreSQL directory with parallel jobs (pg_dump -Fd -j)"),
    ("plain", "Plain SQL"),
    # mariadb-dump (or mysqldump) --single-transaction, one SQL stream.
    ("mariadb", "MariaDB/MySQL SQL dump (mariadb-dump --single-transaction)"),
    ("sqlite", "SQLite database file"),
    # Selective exports of chosen tables (catalog.engine.exports), one tar archive each.
    ("jsonl", "Export: JSON Lines"),
    ("csv", "Export: CSV with header"),
    ("sql", "Export: SQL INSERT statements"),
    # A physical base backup (pg_basebackup, tar) for point-in-time recovery (pitr app).
    ("basebackup", "Physical base backup (pg_basebackup, for point-in-time recovery)"),
]
# What a backup may be besides what a plan makes: pg_dump's tar format, which
# only an imported dump has (catalog/imports.py); pg_restore reads it as it
# reads the custom format, without parallel jobs.
BACKUP_FORMAT_CHOICES = [*FORMAT_CHOICES[:3], ("tar", "PostgreSQL tar (pg_dump -Ft)"), *FORMAT_CHOICES[3:]]
EXPORT_FORMATS = ("jsonl", "csv", "sql")
# Formats whose plan may choose tables: the exports, and a MariaDB dump (which
# takes whole tables: mariadb-dump has no per-table row filter).
TABLE_CHOICE_FORMATS = (*EXPORT_FORMATS, "mariadb")
BASE_BACKUP_FORMAT = "basebackup"
DIRECTORY_FORMAT = "directory"
# pg_dump -j opens one connection to the source per job, and one more.
MAX_DUMP_JOBS = 32
FORMATS_BY_ENGINE = {
    "postgresql": ("custom", DIRECTORY_FORMAT, "plain", *EXPORT_FORMATS, BASE_BACKUP_FORMAT),
    "mariadb": ("mariadb",),
    "sqlite": ("sqlite", *EXPORT_FORMATS),
}
COMPRESSION_CHOICES = [("zstd", "zstd"), ("gzip", "gzip"), ("none", "None")]
# The levels a plan may choose, lowest and highest, by compression (the
# defaults are the engine's DEFAULT_LEVELS). zstd stops at 19: its "ultra"
# levels 20-22 need far more memory than the pipeline's few chunks.
COMPRESSION_LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}

# The largest numbers a form, the API or the admin may store: the models are
# their source of truth (a ModelForm runs these validators). Past them a value
# is a slip of the keyboard, and some would overflow a date where they are
# used (now - timedelta(days=2147483647) stopped every plan's pruning).
MAX_DAYS = 36500  # a hundred years
MAX_VERIFY_DAYS = 3660  # ten years between verifications
MAX_MINUTES = 366 * 24 * 60  # a year
MAX_COUNT = 100_000  # backups kept by count
MAX_QUOTA_GB = 10_000_000  # 10 PB
MAX_PERCENT = 1000
PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]


def at_most(limit: int) -> list[MaxValueValidator]:
    return [MaxValueValidator(limit)]


# A source's health: see catalog.alerts.health.
HEALTH_CHOICES = [
    ("new", "New"),  # no good backup yet, and none overdue (or no enabled plan: none expected)
    ("up", "Up"),
    ("late", "Late"),
    ("down", "Down"),
    ("failing", "Failing"),
    ("paused", "Paused"),
]


class SealedSecrets(models.Model):
    """Secrets kept encrypted in `secret_token`, never rendered back."""

    # Encrypted JSON such as {"password": ...}; see catalog.keyring.
    secret_token = models.TextField(blank=True, editable=False)

    class Meta:
        abstract = True

    def secrets(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The stored secrets, with any non-empty `overrides` taking their place."""
        from catalog import keyring

        stored = keyring.decrypt_secret(self.secret_token) if self.secret_token else {}
        return {**stored, **{k: v for k, v in (overrides or {}).items() if v}}

    def set_secrets(self, **values: str | None) -> None:
        """Keeps existing secrets unless a new non-empty value is given."""
        from catalog import keyring

        merged = self.secrets(values)
        self.secret_token = keyring.encrypt_secret(merged) if merged else ""

    def has_secrets(self) -> bool:
        return bool(self.secret_token)


class Source(SealedSecrets):
    """A database to protect. Its password never leaves `secret_token`."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    engine = models.CharField(max_length=20, choices=ENGINE_CHOICES, default="postgresql")
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=5432, null=True, blank=True, validators=PORT_VALIDATORS)
    dbname = models.CharField("database", max_length=255, blank=True)
    user = models.CharField(max_length=255, blank=True)
    sslmode = models.CharField(max_length=20, blank=True)
    sqlite_path = models.CharField("SQLite file", max_length=1000, blank=True)
    rpo_minutes = models.PositiveIntegerField(
        "RPO target (minutes)", null=True, blank=True, validators=at_most(MAX_MINUTES)
    )
    rto_minutes = models.PositiveIntegerField(
        "RTO target (minutes)", null=True, blank=True, validators=at_most(MAX_MINUTES)
    )
    # Monitoring. The deadlines are precomputed whenever a backup finishes or a
    # plan changes, so that the one-minute tick is an indexed query.
    grace_minutes = models.PositiveIntegerField(
        "grace (minutes)",
        default=120,
        validators=at_most(MAX_MINUTES),
        help_text="How long past the expected interval a backup may be late before the source is down.",
    )
    paused = models.BooleanField("monitoring paused", default=False)
    status = models.CharField(max_length=20, choices=HEALTH_CHOICES, default="new", db_index=True)
    status_since = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField(max_length=500, blank=True)
    last_good_at = models.DateTimeField(null=True, blank=True)
    last_run_failed = models.BooleanField(default=False)
    late_at = models.DateTimeField(null=True, blank=True, db_index=True)
    down_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("operate", "Configure sources, storage and plans; run and cancel backups"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("source_detail", args=[self.pk])

    def conninfo(self, secrets: Mapping[str, str | None] | None = None) -> dict[str, str | int]:
        """Connection parameters for the engine (includes the password).

        `secrets` overrides the stored ones where given, so that a form can be
        tested before it is saved."""
        secrets = self.secrets(secrets)
        if secrets.get("dsn") and self.engine == "postgresql":
            return {"dsn": secrets["dsn"]}
        info: dict[str, str | int] = {
            "host": self.host,
            "port": self.port or DEFAULT_PORTS.get(self.engine, 5432),
            "dbname": self.dbname,
            "user": self.user,
        }
        if self.sslmode:
            info["sslmode"] = self.sslmode
        if secrets.get("password"):
            info["password"] = secrets["password"]
        return info

    def uses_dsn(self) -> bool:
        """A PostgreSQL connection string; other engines have none (one kept
        from before the source's engine changed is not used)."""
        return self.engine == "postgresql" and bool(self.secrets().get("dsn"))

    def target_display(self) -> str:
        """Where the database is, without any secret."""
        if self.engine == "sqlite":
            return self.sqlite_path
        if self.uses_dsn():
            from catalog.keyring import redact_dsn

            return redact_dsn(self.secrets()["dsn"])
        return f"{self.user}@{self.host}:{self.port or DEFAULT_PORTS.get(self.engine, 5432)}/{self.dbname}"

    def identity(self) -> dict[str, str]:
        """What a manifest says about the source: enough to find it, no secret."""
        return {"name": self.name, "slug": self.slug, "engine": self.engine, "target": self.target_display()}

    def last_good_backup(self) -> "Backup | None":
        return self.backups.good().order_by("-finished_at").first()

    def last_verified_restore(self) -> "Verification | None":
        return self.verifications.filter(kind="restore", status="passed").order_by("-finished_at").first()

    def restore_slower_than_rto(self, restore: "Verification | None") -> bool:
        return bool(
            restore and self.rto_minutes and restore.restore_seconds and restore.restore_seconds > self.rto_minutes * 60
        )

    def restore_test_overdue(
        self, last_restore: "Verification | None", has_good_backup: bool, now: datetime | None = None
    ) -> bool:
        """True when no restore test passed within the strictest of its plans'
        policies. Never tested, a plan's test is overdue only once its period
        has passed since the plan was made (a plan comes after its source): a
        source added this morning is not "overdue" by tonight. The caller
        passes what it already read for the page."""
        plans = [p for p in self.plans.all() if p.enabled and p.restore_test_days]
        if not plans or not has_good_backup:
            return False
        now = now or timezone.now()
        if last_restore is not None:
            assert last_restore.finished_at is not None, "a restore test that passed has finished"
            return last_restore.finished_at < now - timedelta(days=min(p.restore_test_days for p in plans))
        return any(now - p.created_at > timedelta(days=p.restore_test_days) for p in plans)

    # --- health (see catalog.alerts.health, which keeps the stored fields right)

    PROBLEM_STATUSES = ("down", "failing")  # the statuses that open an alert

    def expected_interval(self) -> timedelta | None:
        """How often a good backup is due: the tightest of its enabled plans."""
        intervals = [plan.expected_interval() for plan in self.plans.all() if plan.enabled]
        known = [interval for interval in intervals if interval]
        return min(known) if known else None

    def grace(self) -> timedelta:
        return timedelta(minutes=self.grace_minutes)

    def deadlines(
        self, reference: datetime | None, interval: timedelta | None
    ) -> tuple[datetime, datetime] | tuple[None, None]:
        """(late_at, down_at) counted from `reference`, the last good backup or,
        before the first one, the creation of the first enabled plan."""
        if reference is None or interval is None:
            return None, None
        late_at = reference + interval
        return late_at, late_at + self.grace()

    def health_at(
        self, now: datetime, last_failure: "Backup | None" = None, backup_running: bool = False
    ) -> tuple[str, str]:
        """(status, reason) from the stored monitoring fields alone, so that the
        tick can judge a source without reading its backups. `last_failure` is
        the failed backup, when the caller has it, to name it in the reason.
        `backup_running`: a backup of the source is queued or running, so a
        passed late deadline is that backup on its way, not a missed one (else
        every nightly run would flap up → late → up while it runs)."""
        from catalog.text import duration_text, moment_text

        if self.paused:
            return "paused", "Monitoring is paused for this source: it raises no alert."
        if self.late_at is None or self.down_at is None:
            return "new", "No enabled plan: no backup is expected of this source yet."
        if self.last_run_failed:
            if last_failure is not None:
                return "failing", last_failure.failure_text()
            if self.status == "failing" and self.status_reason:
                return "failing", self.status_reason
            return "failing", "The latest backup of this source failed."
        # The reasons say what happened; the pages show the deadlines beside
        # them (late_at, down_at), so that no cell says the same thing twice.
        grace = duration_text(self.grace())
        if self.last_good_at is None:
            waited = f"No good backup yet; the first was due by {moment_text(self.late_at)}"
        else:
            every = duration_text(self.late_at - self.last_good_at)
            waited = f"No good backup for {duration_text(now - self.last_good_at)}; expected every {every}"
        if now >= self.down_at:
            return "down", f"{waited} (grace {grace})."
        if now >= self.late_at and backup_running:
            return "up", f"The backup due at {moment_text(self.late_at)} is under way."
        if now >= self.late_at:
            return "late", f"{waited} (grace {grace})."
        if self.last_good_at is None:
            # Nothing is protected yet, so not "up"; nothing is wrong yet either.
            return "new", "Waiting for its first good backup."
        every = duration_text(self.late_at - self.last_good_at)
        return "up", f"Last good backup started {moment_text(self.last_good_at)}; one is expected every {every}."


class Destination(SealedSecrets):
    """Where copies live: a local directory, an object store or an SFTP server.

    Fields shared by kinds: `bucket` is an S3 or GCS bucket or an Azure
    container, `prefix` the folder inside it, `endpoint_url` the S3 endpoint,
    the Azure blob service URL or a GCS endpoint other than Google's, `path`
    the local directory or the directory on the SFTP server. Each kind's
    secrets are sealed under the names in SECRET_NAMES."""

    LOCAL, S3, AZURE, GCS, SFTP = "local", "s3", "azure", "gcs", "sftp"
    KIND_CHOICES = [
        (LOCAL, "Local directory"),
        (S3, "S3 or S3-compatible"),
        (AZURE, "Azure Blob Storage"),
        (GCS, "Google Cloud Storage"),
        (SFTP, "SFTP server"),
    ]
    OBJECT_STORES = (S3, AZURE, GCS)  # kinds with a bucket (or container) and a prefix
    IMMUTABLE_KINDS = (S3,)  # kinds that can lock a copy against deletion until a date
    SECRET_NAMES = {
        LOCAL: (),
        S3: ("secret_access_key",),
        AZURE: ("account_key", "sas_token"),
        GCS: ("service_account_json",),
        SFTP: ("password", "private_key", "private_key_passphrase"),
    }

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default="local")
    path = models.CharField("directory", max_length=1000, blank=True)
    bucket = models.CharField(max_length=255, blank=True)
    prefix = models.CharField(max_length=500, blank=True)
    endpoint_url = models.CharField("endpoint URL", max_length=500, blank=True)
    region = models.CharField(max_length=64, blank=True)
    access_key_id = models.CharField("access key ID", max_length=255, blank=True)
    account_name = models.CharField("storage account", max_length=255, blank=True)
    # SFTP: the server, its port and the user; the server's host key is pinned
    # the first time Strongroom connects (Test or first use) and checked on
    # every connection after.
    server = models.CharField("SFTP server", max_length=255, blank=True)
    server_port = models.PositiveIntegerField("SFTP port", null=True, blank=True, validators=PORT_VALIDATORS)
    username = models.CharField("user", max_length=255, blank=True)
    host_key = models.TextField("pinned host key", blank=True, editable=False)
    host_key_pinned_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A local folder is on one host's disk unless every host mounts the same
    # one at `path`: work that reads or writes it runs on that host
    # (catalog/queues.py). Blank: every host sees it, or there is one host.
    host = models.CharField(max_length=64, blank=True)
    offsite = models.BooleanField("off-site", default=False)
    immutable_days = models.PositiveIntegerField(
        "Object Lock days", null=True, blank=True, validators=at_most(MAX_DAYS)
    )
    lock_mode = models.CharField(
        "Object Lock mode",
        max_length=20,
        choices=[("GOVERNANCE", "Governance"), ("COMPLIANCE", "Compliance")],
        default="GOVERNANCE",
    )
    quota_gb = models.PositiveIntegerField("quota (GB)", null=True, blank=True, validators=at_most(MAX_QUOTA_GB))
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("destination_detail", args=[self.pk])

    def forget_other_kinds_secrets(self) -> None:
        """Keeps only the secrets this kind uses: a destination switched from S3
        to Azure should not go on holding the S3 secret key."""
        own = {name: value for name, value in self.secrets().items() if name in self.SECRET_NAMES[self.kind]}
        self.secret_token = ""
        self.set_secrets(**own)

    def storage(self, secrets: Mapping[str, str | None] | None = None) -> Storage:
        """The backend for this destination. `secrets` override the stored ones
        where given, so that a form can be tested before it is saved."""
        secrets = self.secrets(secrets)
        if self.kind == self.LOCAL:
            self.check_reachable()
            return self.local_storage()
        self.check_endpoint()
        openers = {self.S3: self.s3_storage, self.AZURE: self.azure_storage, self.GCS: self.gcs_storage}
        openers[self.SFTP] = self.sftp_storage
        return openers[self.kind](secrets)

    # One opener per kind. Each imports its client library only when a
    # destination of its kind is used: most installations use one or two kinds,
    # and a worker need not load every cloud SDK (boto3 alone is ~7 MB).

    def local_storage(self) -> Storage:
        from catalog.engine.storage.local import LocalStorage

        return LocalStorage(self.path, allowed_roots=settings.LOCAL_DESTINATION_ROOTS)

    def s3_storage(self, secrets: Mapping[str, str]) -> Storage:
        from catalog.engine.storage.s3 import S3Storage

        return S3Storage(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url or None,
            region=self.region or None,
            access_key_id=self.access_key_id or None,
            secret_access_key=secrets.get("secret_access_key"),
            lock_mode=self.lock_mode if self.immutable_days else None,
            max_attempts=settings.S3_MAX_ATTEMPTS,
            connect_timeout=settings.S3_CONNECT_TIMEOUT,
            read_timeout=settings.S3_READ_TIMEOUT,
            part_size=settings.S3_PART_SIZE_MB << 20,
        )

    def azure_storage(self, secrets: Mapping[str, str]) -> Storage:
        from catalog.engine.storage.azure import AzureStorage

        # The account key when both are given; the retries and timeouts are the S3 ones.
        return AzureStorage(
            container=self.bucket,
            prefix=self.prefix,
            account_name=self.account_name or None,
            endpoint_url=self.endpoint_url or None,
            account_key=secrets.get("account_key"),
            sas_token=secrets.get("sas_token"),
            max_attempts=settings.S3_MAX_ATTEMPTS,
            connect_timeout=settings.S3_CONNECT_TIMEOUT,
            read_timeout=settings.S3_READ_TIMEOUT,
        )

    def gcs_storage(self, secrets: Mapping[str, str]) -> Storage:
        import json

        from catalog.endpoints import endpoint_problem
        from catalog.engine.errors import StorageError
        from catalog.engine.storage.gcs import GcsStorage

        key = secrets.get("service_account_json")
        # A key names where Strongroom signs in (its token_uri): checked as an endpoint is.
        try:
            token_uri = json.loads(key).get("token_uri") if key else None
        except (ValueError, AttributeError):
            token_uri = None  # GcsStorage says what is wrong with the key
        if isinstance(token_uri, str) and (problem := endpoint_problem(token_uri)):
            raise StorageError(f"The sign-in URL (token_uri) of the key of {self.name} is refused: {problem}")
        return GcsStorage(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url or None,
            service_account_json=key,
            max_attempts=settings.S3_MAX_ATTEMPTS,
            connect_timeout=settings.S3_CONNECT_TIMEOUT,
            read_timeout=settings.S3_READ_TIMEOUT,
        )

    def sftp_storage(self, secrets: Mapping[str, str]) -> Storage:
        from catalog.engine.storage.sftp import SftpStorage

        # The pinned host key holds for the server it was pinned on: a form's
        # Test of another server (or port) checks nothing against it.
        pinned = self.host_key if self.host_key and self.at_saved_server() else None
        return SftpStorage(
            server=self.server,
            port=self.server_port or 22,
            directory=self.path,
            username=self.username,
            password=secrets.get("password"),
            private_key=secrets.get("private_key"),
            passphrase=secrets.get("private_key_passphrase"),
            host_key=pinned,
            on_new_host_key=self.host_key_seen,
            max_attempts=settings.S3_MAX_ATTEMPTS,
            connect_timeout=settings.S3_CONNECT_TIMEOUT,
            read_timeout=settings.S3_READ_TIMEOUT,
        )

    # What the last connection did with a host key seen the first time, in
    # words for the form's Test ("" when it saw none).
    host_key_note = ""

    def at_saved_server(self) -> bool:
        """Whether this is a saved destination still naming the server and port it was saved with."""
        return self.pk is not None and (
            Destination.objects.filter(pk=self.pk, server=self.server, server_port=self.server_port).exists()
        )

    def host_key_seen(self, key_line: str) -> str | None:
        """A server's host key seen on a first connection. A saved destination
        pins it (services.pin_host_key) and answers the key pinned now, which
        is another one if a connection elsewhere pinned first; an unsaved one
        (the form's Test) pins nothing and says which key it saw."""
        from catalog import services
        from catalog.engine.storage.sftp import fingerprint

        if not self.at_saved_server():
            self.host_key_note = (
                f"The server's host key is {fingerprint(key_line)}: compare it with ssh-keygen -l on the server. "
                "It will be pinned on first use once the destination is saved."
            )
            return None
        pinned = services.pin_host_key(self, key_line)
        if pinned == key_line:
            self.host_key_note = f"Pinned the server's host key {fingerprint(key_line)}."
        return pinned

    def host_key_fingerprint(self) -> str:
        """The pinned host key as ssh-keygen -l shows it, or ""."""
        from catalog.engine.storage.sftp import fingerprint

        return fingerprint(self.host_key) if self.host_key else ""

    QUOTA_WARNING = 0.8  # share of the quota at which the dashboard warns

    def used_bytes(self) -> int:
        """What the catalog knows is stored here: durable copies, not yet pruned."""
        return self.copies.filter(status=Copy.DURABLE).aggregate(total=models.Sum("size"))["total"] or 0

    def quota_bytes(self) -> int | None:
        return self.quota_gb * 2**30 if self.quota_gb else None  # GB as the pages show sizes (binary)

    def disk_usage(self) -> "shutil._ntuple_diskusage | None":
        """(total, used, free) bytes of a local destination's file system, if it can be read."""
        if self.kind != "local" or not self.path or not self.reachable_here():
            return None  # another host's folder: this host's disk says nothing of it
        directory = Path(self.path)
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent  # not created yet: its file system is the parent's
        try:
            return shutil.disk_usage(directory)
        except OSError:
            return None

    def free_disk_bytes(self) -> int | None:
        usage = self.disk_usage()
        return usage.free if usage else None

    def usage(self, used: int | None = None) -> "Usage":
        """`used`: the bytes already summed for many destinations in one query."""
        used, quota = (self.used_bytes() if used is None else used), self.quota_bytes()
        share = used / quota if quota else None
        return {
            "used": used,
            "quota": quota,
            "share": share,
            "percent": min(100, round(share * 100)) if share is not None else None,
            "warning": share is not None and share >= self.QUOTA_WARNING,
            "free_disk": self.free_disk_bytes(),
        }

    def lock_until(self, now: datetime) -> datetime | None:
        """Until when a copy written now is immutable (S3 Object Lock), if at all."""
        if self.kind not in self.IMMUTABLE_KINDS or not self.immutable_days:
            return None
        return (now + timedelta(days=self.immutable_days)).replace(microsecond=0)

    def check_endpoint(self) -> None:
        """Checked again before each use, not only on the form: the endpoint's
        name may resolve to another address now (catalog/endpoints.py)."""
        from catalog.endpoints import endpoint_problem
        from catalog.engine.errors import StorageError

        if (url := self.endpoint_to_check()) and (problem := endpoint_problem(url)):
            raise StorageError(f"The endpoint of {self.name} is refused: {problem}")

    def endpoint_to_check(self) -> str:
        """The URL this destination sends requests to, when it is not the provider's own."""
        if self.kind == self.SFTP:
            return f"sftp://{self.server}" if self.server else ""
        return "" if self.kind == self.LOCAL else self.endpoint_url

    def provider(self) -> str:
        """Who keeps the copies, for 3-2-1: every local folder is this site's
        disks; an object store is its provider (an S3-compatible endpoint is
        its own provider); an SFTP server is the machine it runs on."""
        if self.kind == self.LOCAL:
            return "local disks"
        if self.kind == self.SFTP:
            return f"SFTP server {self.server.lower()}"
        host = urlsplit(self.endpoint_url).hostname if self.endpoint_url else None
        if self.kind == self.S3:
            return f"S3-compatible storage at {host.lower()}" if host else "AWS S3"
        named = {self.AZURE: "Azure Blob Storage", self.GCS: "Google Cloud Storage"}[self.kind]
        return f"{named} at {host.lower()}" if host else named

    def bound_host(self) -> str:
        """The one host that can reach this destination, or "" when every host can."""
        return self.host if self.kind == "local" else ""

    def reachable_here(self) -> bool:
        return self.bound_host() in ("", settings.HOST_NAME)

    def elsewhere_text(self) -> str:
        """Why this host cannot open the destination, or "" when it can."""
        if self.reachable_here():
            return ""
        return (
            f"The folder {self.path} of destination “{self.name}” is on host {self.host}'s disk; "
            f"this is host {settings.HOST_NAME}"
        )

    def check_reachable(self) -> None:
        """Checked wherever the storage is opened: the same path on this host
        is another folder, or none, and reading or writing it would be wrong
        silently (a backup kept on the wrong machine, a restore finding nothing)."""
        from catalog.engine.errors import StorageError

        if problem := self.elsewhere_text():
            raise StorageError(problem)

    def host_display(self) -> str:
        host = self.bound_host()
        if host:
            return f"{host} (the folder is on its disk)"
        return "every host (a shared mount, or one host only)" if self.kind == "local" else "every host"

    def location_display(self) -> str:
        if self.kind == self.LOCAL:
            return self.path
        if self.kind == self.SFTP:
            port = f":{self.server_port}" if self.server_port and self.server_port != 22 else ""
            return f"sftp://{self.username}@{self.server}{port}/{self.path.lstrip('/')}".rstrip("/")
        scheme = {self.S3: "s3", self.AZURE: "azure", self.GCS: "gs"}[self.kind]
        where = f"{scheme}://{self.bucket}/{self.prefix}".rstrip("/")
        if self.kind == self.AZURE and self.account_name:
            where = f"azure://{self.account_name}/{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} ({self.endpoint_url})" if self.endpoint_url else where


def three_two_one_missing(destinations: Collection[Destination]) -> list[str]:
    """What `destinations` lack to hold a backup by 3-2-1: the database itself
    plus two copies, with two providers (kinds of storage: local disk, an S3
    bucket, an Azure container...), one of them away from the database server.
    A destination marked off-site is away; so is the second of two cloud
    providers, since one provider's outage or account loss cannot take both."""
    missing: list[str] = []
    if len(destinations) < 2:
        missing.append(f"a second copy (only {len(destinations)})")
    providers = {d.provider() for d in destinations}
    if len(providers) < 2:
        missing.append("a second kind of storage or provider (e.g. local disk and S3, or S3 and Azure)")
    remote = {d.provider() for d in destinations if d.kind in Destination.OBJECT_STORES}
    if not any(d.offsite for d in destinations) and len(remote) < 2:
        missing.append("an off-site copy")
    return missing


def destinations_by_host(destinations: Iterable[Destination]) -> dict[str, list[str]]:
    """{host: names of the destinations on its disk}, for those bound to a host."""
    by_host: dict[str, list[str]] = {}
    for destination in destinations:
        if host := destination.bound_host():
            by_host.setdefault(host, []).append(destination.name)
    return by_host


def host_conflict(destinations: Iterable[Destination]) -> str:
    """Why one backup cannot write all of `destinations` (local folders on
    different hosts' disks, and a backup runs on one host), or ""."""
    by_host = destinations_by_host(destinations)
    if len(by_host) < 2:
        return ""
    where = "; ".join(f"{', '.join(sorted(names))} on {host}'s disk" for host, names in sorted(by_host.items()))
    return (
        f"A backup runs on one host, and these local folders are on different hosts' disks: {where}. "
        "Choose the folders of one host, or a shared mount or S3."
    )


class BackupPlan(models.Model):
    """What to back up, how, where to, and when (one cron schedule)."""

    name = models.CharField(max_length=100, unique=True)
    source = models.ForeignKey(Source, models.CASCADE, related_name="plans")
    schedule = models.CharField("cron schedule", max_length=100, default="0 3 * * *")
    format = models.CharField(max_length=20, choices=FORMAT_CHOICES, default="custom")
    compression = models.CharField(max_length=10, choices=COMPRESSION_CHOICES, default="zstd")
    # Empty: the compression's default level (DEFAULT_LEVELS), so a plan that
    # never chose one follows the default if it changes.
    compression_level = models.PositiveSmallIntegerField("compression level", null=True, blank=True)
    dump_jobs = models.PositiveSmallIntegerField(
        "parallel dump jobs",
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_DUMP_JOBS)],
        help_text="Directory format only: pg_dump dumps this many tables at once, "
        "with one connection to the source each and one more.",
    )
    encrypt = models.BooleanField("encrypt", default=True)
    destinations = models.ManyToManyField(Destination, related_name="plans")
    enabled = models.BooleanField(default=True)
    retention_mode = models.CharField("rule", max_length=10, choices=retention.MODE_CHOICES, default=retention.GFS)
    # A hundred years of each period at most.
    keep_daily = models.PositiveIntegerField("daily", default=30, validators=at_most(MAX_DAYS))
    keep_weekly = models.PositiveIntegerField("weekly", default=12, validators=at_most(MAX_DAYS // 7))
    keep_monthly = models.PositiveIntegerField("monthly", default=12, validators=at_most(MAX_DAYS // 365 * 12))
    keep_yearly = models.PositiveIntegerField("yearly", default=5, validators=at_most(MAX_DAYS // 365))
    keep_last = models.PositiveIntegerField("last N", default=7, validators=at_most(MAX_COUNT))
    keep_days = models.PositiveIntegerField("newer than (days)", default=30, validators=at_most(MAX_DAYS))
    keep_minimum = models.PositiveIntegerField("keep at least", default=1, validators=at_most(MAX_COUNT))
    # Manual backups ("Back up now", the API, labelled ones) are kept this long
    # apart from the rule above, which would otherwise thin them with the
    # scheduled ones (catalog/retention.py).
    keep_manual_days = models.PositiveIntegerField(
        "keep manual backups (days)", default=30, validators=at_most(MAX_DAYS)
    )
    verify_new_backups = models.BooleanField("checksum every new backup", default=True)
    restore_test_days = models.PositiveIntegerField(
        "test-restore every (days)", default=7, validators=at_most(MAX_VERIFY_DAYS)
    )
    checksum_all_days = models.PositiveIntegerField(
        "checksum all copies every (days)", default=30, validators=at_most(MAX_VERIFY_DAYS)
    )
    size_tolerance_percent = models.PositiveIntegerField(
        "size alert tolerance (%)",
        default=50,
        validators=at_most(MAX_PERCENT),
        help_text="Alert when a backup is this much smaller or larger than the median of the previous 7; "
        "0 turns the alert off.",
    )
    # Export plans only: tables picked by name, [{"schema", "name", "where"}], and
    # named sets, [{"label", "pattern"}], matched against the live schema at each
    # run so that a table created later (a new audit_* table) is exported too.
    export_tables = models.JSONField("tables", default=list, blank=True)
    export_sets = models.JSONField("named sets", default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # What every manifest says of its plan, so that a catalog rebuilt from the
    # manifests can make the plan again (catalog/rebuild.py): all its settings
    # and when it was made, but not its source and destinations (rows of their
    # own). A plan holds no secret; its source's password is not here.
    DEFINITION_FIELDS = (
        "name",
        "schedule",
        "format",
        "compression",
        "compression_level",
        "dump_jobs",
        "encrypt",
        "enabled",
        "retention_mode",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "keep_yearly",
        "keep_last",
        "keep_days",
        "keep_minimum",
        "keep_manual_days",
        "verify_new_backups",
        "restore_test_days",
        "checksum_all_days",
        "size_tolerance_percent",
        "export_tables",
        "export_sets",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("plan_detail", args=[self.pk])

    def required_host(self) -> str:
        """The host whose disk holds this plan's local folders, where its
        backups run; "" when every host can write all its destinations. A plan
        with folders on two hosts' disks is refused (host_conflict)."""
        return min(destinations_by_host(self.destinations.all()), default="")

    def definition(self) -> dict[str, Any]:
        """The plan as its backups' manifests describe it (DEFINITION_FIELDS)."""
        return {
            **{name: getattr(self, name) for name in self.DEFINITION_FIELDS},
            "created_at": self.created_at.isoformat(),
        }

    def is_export(self) -> bool:
        return self.format in EXPORT_FORMATS

    def compression_level_problem(self) -> str | None:
        """Why the chosen level does not fit the chosen compression, if it does not."""
        if self.compression_level is None:
            return None
        if self.compression not in COMPRESSION_LEVELS:
            return "Without compression there is no level: leave it empty."
        low, high = COMPRESSION_LEVELS[self.compression]
        if not low <= self.compression_level <= high:
            return (
                f"A {self.compression} level is from {low} to {high}; "
                f"empty for the default ({DEFAULT_LEVELS[self.compression]})."
            )
        return None

    def effective_compression_level(self) -> int | None:
        """The level its backups are compressed at: the chosen one or the
        compression's default; None when it does not compress."""
        if self.compression not in DEFAULT_LEVELS:
            return None
        return self.compression_level if self.compression_level is not None else DEFAULT_LEVELS[self.compression]

    def clean(self) -> None:
        if problem := self.compression_level_problem():
            raise ValidationError({"compression_level": problem})

    def has_export_selection(self) -> bool:
        return bool(self.export_tables or self.export_sets)

    def table_specs(self, live_tables: Iterable[Mapping[str, Any]]) -> list[TableSpec]:
        """The TableSpecs one run exports: the tables picked by name, each with
        its WHERE filter, and every live table a named set matches (unfiltered,
        unless it was also picked by name). `live_tables` is list_tables()."""
        from catalog.engine.exports import match_tables

        specs = {
            f"{t['schema']}.{t['name']}": TableSpec(t["schema"], t["name"], t.get("where", ""))
            for t in self.export_tables
        }
        for named_set in self.export_sets:
            for qualified in match_tables(live_tables, named_set["pattern"]):
                if qualified not in specs:
                    schema, name = qualified.split(".", 1)
                    specs[qualified] = TableSpec(schema, name)
        return [specs[qualified] for qualified in sorted(specs)]

    def schedule_name(self) -> str:
        return f"strongroom-plan-{self.pk}"

    def next_runs(self, count: int = 5) -> list[datetime]:
        from catalog.schedules import next_runs

        return next_runs(self.schedule, count)

    def expected_interval(self, start: datetime | None = None, runs: int = 60) -> timedelta | None:
        """The longest gap between two runs of the schedule over the next `runs`
        runs: a daily plan gives 24 h, a weekdays-only plan 72 h (the weekend)."""
        from catalog.schedules import next_runs

        times = next_runs(self.schedule, runs + 1, start)
        if len(times) < 2:
            return None
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def retention_policy(self) -> retention.Policy:
        return retention.Policy(
            mode=self.retention_mode,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
            last=self.keep_last,
            days=self.keep_days,
            # Rule 4: the newest good backup is always kept, so at least one.
            minimum=max(self.keep_minimum, 1),
            manual_days=self.keep_manual_days,
        )

    def three_two_one(self) -> "ThreeTwoOne":
        """Whether the latest stored backup meets 3-2-1: the database itself plus
        two copies, on two kinds of storage, one of them off-site.

        Before the first backup it judges the configured destinations instead."""
        stored = self.stored_backups().ready().filter(copies__status=Copy.DURABLE)
        latest = stored.without_log().order_by("-created_at").first()
        if latest:
            destinations = [
                c.destination for c in latest.copies.filter(status=Copy.DURABLE).select_related("destination")
            ]
        else:
            destinations = list(self.destinations.all())
        missing = three_two_one_missing(destinations)
        providers = sorted({d.provider() for d in destinations})
        return {"ok": not missing, "missing": missing, "backup": latest, "providers": providers}

    def stored_backups(self) -> "BackupQuerySet":
        """The backups retention decides about: with data, not yet pruned."""
        return self.backups.filter(status__in=Backup.WITH_DATA, pruned_at__isnull=True)


class Usage(TypedDict):
    """What Destination.usage() says of a destination's space."""

    used: int
    quota: int | None
    share: float | None
    percent: int | None
    warning: bool
    free_disk: int | None


class ThreeTwoOne(TypedDict):
    """BackupPlan.three_two_one(): whether the rule is met, what is missing, and the backup judged."""

    ok: bool
    missing: list[str]
    backup: "Backup | None"
    providers: list[str]  # where the copies judged are kept (Destination.provider)


class BaseWal(Protocol):
    """What the catalog reads of a base backup's WAL bounds (Backup.wal_bounds):
    pitr.BaseBackupWal, reached by its related name without importing pitr."""

    @property
    def start_segment(self) -> str: ...

    @property
    def end_segment(self) -> str: ...

    @property
    def wal_complete_at(self) -> datetime | None: ...


class BackupQuerySet(models.QuerySet["Backup"]):
    def active(self) -> Self:
        return self.filter(status__in=Backup.ACTIVE_STATUSES)

    def ready(self) -> Self:
        """Leaves out the physical base backups still waiting for their WAL
        (pitr.BaseBackupWal.wal_complete_at unset): their data is stored, but
        no cluster can be recovered from them yet."""
        return self.filter(~Q(format=BASE_BACKUP_FORMAT) | Q(base_wal__wal_complete_at__isnull=False))

    def good(self) -> Self:
        """Backups a restore can count on: succeeded, and ready."""
        return self.filter(status=Backup.SUCCEEDED).ready()

    def without_log(self) -> Self:
        """Leaves the job's log and the table counts, which grow with the
        backup, in the database: for pages and polls that do not show them."""
        return self.defer("log", "table_counts")

    def for_rows(self) -> Self:
        """What a row of backups (partials/backup_rows.html) shows, in one
        query: the related names joined, the log left in the database."""
        return self.select_related("source", "plan", "triggered_by", "base_wal").without_log()


class Job(models.Model):
    """What a queued, cancellable piece of work run by a worker keeps: when it
    ran, who ran it, its heartbeat and its log. Backups and verifications are jobs."""

    # Each concrete job defines its own status field and active statuses; these
    # annotations (no values, so no fields) tell the type checker they exist.
    status: str
    ACTIVE_STATUSES: tuple[str, ...]

    log = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def can_cancel(self) -> bool:
        return self.is_active() and not self.cancel_requested

    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def append_log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.log = f"{self.log}{stamp} {line}\n"


class WorkerHeartbeat(models.Model):
    """One django-q2 cluster (a queue's workers) on one host, last seen alive.

    Each cluster's sentinel writes its row every WORKER_HEARTBEAT_SECONDS
    through its broker (catalog/brokers.py), into the metadata database every
    host shares: /readyz asks whether any work cluster is alive, and the
    point-in-time restore lets the user choose among the hosts whose own
    queue has a live cluster."""

    host = models.CharField(max_length=64)
    queue = models.CharField(max_length=100)
    pid = models.PositiveIntegerField(default=0)
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "queue"], name="one_heartbeat_per_host_queue")]

    def __str__(self) -> str:
        return f"{self.queue} on {self.host}"


class Backup(Job):
    """One run of a plan (scheduled, manual or from the API)."""

    # Not fields: what a run's dump reports, kept on the object for its manifest
    # (export_manifest of an export, wal of a base backup) and, for wal, for pitr.
    export_manifest: dict[str, Any] | None
    wal: dict[str, Any]

    QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED = (
        "queued",
        "running",
        "succeeded",
        "partial",
        "failed",
        "cancelled",
    )
    STATUS_CHOICES = [(s, s.capitalize()) for s in (QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED)]
    ACTIVE_STATUSES = (QUEUED, RUNNING)
    WITH_DATA = (SUCCEEDED, PARTIAL)
    # "import": a dump made elsewhere, brought in through the pipeline (catalog/imports.py).
    TRIGGER_CHOICES = [("schedule", "Schedule"), ("manual", "Manual"), ("api", "API"), ("import", "Import")]
    IMPORT = "import"

    source = models.ForeignKey(Source, models.PROTECT, related_name="backups")
    plan = models.ForeignKey(BackupPlan, models.SET_NULL, null=True, blank=True, related_name="backups")
    label = models.CharField(max_length=100, blank=True)
    trigger = models.CharField(max_length=20, choices=TRIGGER_CHOICES, default="manual")
    triggered_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    phase = models.CharField(max_length=40, blank=True)
    format = models.CharField(max_length=20, choices=BACKUP_FORMAT_CHOICES)
    # An imported dump (trigger "import"): who brought it (none from the
    # command line), from where ("upload orders.dump", "s3://bucket/key",
    # "file /srv/old.dump"), and what the file was ("pg_dump custom-format
    # archive, gzip-compressed"), as its manifest keeps them for a rebuild.
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    imported_from = models.CharField(max_length=300, blank=True)
    imported_format = models.CharField("format as imported", max_length=200, blank=True)
    compression = models.CharField(max_length=10, choices=COMPRESSION_CHOICES)
    # The level it was compressed at; empty when it is not compressed. Backups
    # taken before levels were recorded all had the default (migration 0018).
    compression_level = models.PositiveSmallIntegerField(null=True, blank=True)
    encrypted = models.BooleanField(default=True)
    key_id = models.CharField(max_length=64, blank=True)
    # {master key id: base64 of the data key wrapped by that key}, added by key
    # rotation: the object's own header keeps its original wrap (the data is
    # never re-encrypted), so these let a newer key open it.
    key_wraps = models.JSONField(default=dict, blank=True)
    object_key = models.CharField(max_length=1000, blank=True)
    raw_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    server_version = models.CharField(max_length=100, blank=True)
    tool_version = models.CharField(max_length=200, blank=True)
    table_counts = models.JSONField(default=dict, blank=True)
    # The source database's default character set and collation, where the
    # engine keeps them apart from the dump (MariaDB/MySQL: a dump of one
    # database has no CREATE DATABASE): {"charset": ..., "collation": ...}.
    database_defaults = models.JSONField(default=dict, blank=True)
    # {partitioned parent: [its leaf partitions]}: the leaves are what
    # table_counts counts; a parent's name chooses them all in a restore.
    partitions = models.JSONField(default=dict, blank=True)
    # The roles the database's objects, grants and settings name (not secret,
    # so the wizard can compare them with a target server without reading the
    # encrypted globals object, whose SHA-256 is kept beside them; see
    # catalog/globals.py). Empty for backups taken before globals were kept.
    roles = models.JSONField(default=list, blank=True)
    globals_sha256 = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=500, blank=True)
    pinned = models.BooleanField(default=False)
    legal_hold = models.BooleanField(default=False)
    hold_reason = models.CharField("reason for the pin or hold", max_length=300, blank=True)
    # When the pin or hold last changed: a catalog rebuild that finds different
    # hold records in two destinations (one write failed) takes the newer.
    hold_changed_at = models.DateTimeField("pin or hold last changed", null=True, blank=True)
    pruned_at = models.DateTimeField(null=True, blank=True)
    prune_reason = models.CharField(max_length=300, blank=True)
    # A manual backup kept until then, as asked when it was taken; empty: its
    # plan's keep_manual_days (see is_manual and catalog/retention.py).
    keep_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = BackupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Backup #{self.pk} of {self.source}"

    def get_absolute_url(self) -> str:
        return reverse("backup_detail", args=[self.pk])

    def elapsed_seconds(self) -> int:
        duration = self.duration()
        return int(duration.total_seconds()) if duration else 0

    def compression_ratio(self) -> float | None:
        if not self.raw_bytes or not self.stored_bytes:
            return None
        return self.raw_bytes / self.stored_bytes

    def total_rows(self) -> int:
        return sum(self.table_counts.values()) if self.table_counts else 0

    def restorable_tables(self) -> dict[str, int]:
        """{table: rows} for every table a restore can be asked for: those
        counted, and each partitioned parent with the rows of its partitions."""
        parents = {
            parent: sum(self.table_counts.get(leaf, 0) for leaf in leaves)
            for parent, leaves in (self.partitions or {}).items()
        }
        return {**self.table_counts, **parents}

    def outermost_tables(self, tables: Collection[str]) -> list[str]:
        """`tables` without the partitions of a parent that is also chosen:
        a parent is read and written whole, its rows routed to partitions."""
        covered = {leaf for parent in tables for leaf in (self.partitions or {}).get(parent, ())}
        return sorted(set(tables) - covered)

    def leaf_tables(self, tables: Iterable[str]) -> list[str]:
        """`tables` with each partitioned parent replaced by its partitions."""
        leaves: set[str] = set()
        for table in tables:
            leaves.update((self.partitions or {}).get(table, [table]))
        return sorted(leaves)

    def is_export(self) -> bool:
        return self.format in EXPORT_FORMATS

    def is_base_backup(self) -> bool:
        return self.format == BASE_BACKUP_FORMAT

    def is_imported(self) -> bool:
        return self.trigger == self.IMPORT

    def imported_text(self) -> str:
        """ "Imported by ana from upload orders.dump" ("" unless imported)."""
        if not self.is_imported():
            return ""
        by = f" by {self.imported_by}" if self.imported_by_id else ""
        return f"Imported{by} from {self.imported_from}"

    def restore_spools(self, jobs: int) -> bool:
        """Whether a restore with `jobs` pg_restore jobs writes the dump to a
        temporary place first: pg_restore -j seeks in a custom-format file,
        and reads a directory-format dump only from its files."""
        return self.format == DIRECTORY_FORMAT or (self.format == "custom" and jobs > 1)

    def wal_bounds(self) -> BaseWal | None:
        """A base backup's pitr.BaseBackupWal (the WAL it needs), if recorded."""
        if not self.is_base_backup():
            return None
        try:
            return self.base_wal
        except ObjectDoesNotExist:
            return None

    def waiting_for_wal(self) -> bool:
        """A physical base backup is not good until the WAL it needs to reach
        consistency is stored: until then its data alone restores nothing."""
        if not self.is_base_backup():
            return False
        bounds = self.wal_bounds()
        return bounds is None or bounds.wal_complete_at is None

    def is_good(self) -> bool:
        return self.status == self.SUCCEEDED and not self.waiting_for_wal()

    def wal_waiting_for(self) -> str:
        """The first WAL segment this base backup still waits for, to name on
        its page ("" when it waits for none, or nothing is recorded yet)."""
        missing = registry.steps_of(self.format).waiting_for(self) if self.waiting_for_wal() else []
        return missing[0] if missing else ""

    def hold(self) -> str:
        """Why retention must keep this backup whatever its rule says, if at all."""
        if self.legal_hold:
            return "legal hold"
        return "pinned" if self.pinned else ""

    def is_pruned(self) -> bool:
        return self.pruned_at is not None

    def is_manual(self) -> bool:
        """Taken by a person or a script rather than by its plan's schedule, or
        given a label: retention keeps it by the plan's manual rule."""
        return self.trigger != "schedule" or bool(self.label)

    def manual_text(self) -> str:
        """What made it, for the retention reasons ("" when its schedule did)."""
        if not self.is_manual():
            return ""
        if self.label:
            return f"backup labelled {self.label}"
        return {"api": "API backup", self.IMPORT: "imported dump"}.get(self.trigger, "manual backup")

    def manual_keep_until(self) -> datetime | None:
        """Until when the manual rule keeps it, or None."""
        if not self.is_manual():
            return None
        plan = self.plan  # None, without a query, when plan_id is None
        policy = plan.retention_policy() if plan is not None else retention.Policy(manual_days=0)
        return policy.manual_until(self.retention_candidate())

    def readable_copies(self) -> "list[Copy]":
        """Durable copies in the order to read them: those this host can open
        first, of those local ones first, as they are cheaper and faster to
        read than S3."""
        copies = self.copies.filter(status=Copy.DURABLE).select_related("destination")
        return sorted(
            copies,
            key=lambda c: (not c.destination.reachable_here(), c.destination.kind != "local", c.destination.name),
        )

    def host_to_read(self, every_copy: bool = False) -> str:
        """The host where work that reads this backup runs: "" (any host) when
        one of its copies is where every host reaches it, else the host whose
        disk holds its copies. A checksum verification reads `every_copy`:
        then the host of its host-bound copies, whatever else there is."""
        destinations = [copy.destination for copy in self.readable_copies()]
        by_host = destinations_by_host(destinations)
        if not every_copy and any(not destination.bound_host() for destination in destinations):
            return ""
        return min(by_host, default="")

    def failure_text(self) -> str:
        """What an on-call engineer is told about this failed backup."""
        plan = f" of plan {self.plan}" if self.plan_id else ""
        return f"Backup #{self.pk}{plan} failed: {self.error or 'no error was recorded'}"[:500]

    def retention_candidate(self) -> retention.Candidate:
        return retention.Candidate(
            id=self.pk,
            created_at=self.created_at,
            good=self.is_good(),
            hold=self.hold(),
            not_good="waiting for its WAL" if self.status == self.SUCCEEDED else "partial",
            manual=self.manual_text(),
            keep_until=self.keep_until,
        )


class Copy(models.Model):
    """One backup's object in one destination."""

    PENDING, DURABLE, FAILED, PRUNED = "pending", "durable", "failed", "pruned"
    STATUS_CHOICES = [(s, s.capitalize()) for s in (PENDING, DURABLE, FAILED, PRUNED)]

    backup = models.ForeignKey(Backup, models.CASCADE, related_name="copies")
    destination = models.ForeignKey(Destination, models.PROTECT, related_name="copies")
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=PENDING)
    key = models.CharField(max_length=1000)
    manifest_key = models.CharField(max_length=1000, blank=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=500, blank=True)
    durable_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    pruned_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField("Object Lock until", null=True, blank=True)

    class Meta:
        ordering = ["destination__name"]
        verbose_name_plural = "copies"  # not "copys"
        constraints = [
            models.UniqueConstraint(fields=["backup", "destination"], name="one_copy_per_destination"),
        ]

    def __str__(self) -> str:
        return f"{self.destination}: {self.key}"

    def location_display(self) -> str:
        return f"{self.destination.location_display().split(' (')[0].rstrip('/')}/{self.key}"

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or timezone.now())


class Key(models.Model):
    """A master key known by id. Its bytes live in a file in KEY_DIR (one
    host), or sealed in `sealed_key` under the key-encryption key and/or AWS
    KMS (every host sharing this database: catalog/keyring.py); never plain."""

    GENERATED, IMPORTED = "generated", "imported"
    ORIGIN_CHOICES = [(GENERATED, "Generated by Strongroom"), (IMPORTED, "Imported")]

    key_id = models.CharField(max_length=64, unique=True)
    fingerprint = models.CharField(max_length=64)
    is_active = models.BooleanField(default=False)
    origin = models.CharField(max_length=20, choices=ORIGIN_CHOICES, default=GENERATED)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)
    # The key file was deleted: nothing encrypted with this key alone can be read any more.
    destroyed_at = models.DateTimeField(null=True, blank=True)
    # A copy of the key file is known to exist away from this machine: an
    # administrator downloaded it or said they hold one. Until then, losing the
    # machine loses every backup sealed with it, off-site copies included.
    DOWNLOADED, CONFIRMED = "downloaded", "confirmed"
    COPY_CHOICES = [(DOWNLOADED, "Downloaded"), (CONFIRMED, "Confirmed held")]
    copy_held_at = models.DateTimeField(null=True, blank=True)
    copy_held_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    copy_held_how = models.CharField(max_length=20, choices=COPY_CHOICES, blank=True)
    # "kek-v1:…", "kms-v1:…" or "kms+kek-v1:…" (catalog/engine/keyseal.py); blank
    # while the key is a file only, and once it is destroyed.
    sealed_key = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True), name="one_active_key"),
        ]

    def __str__(self) -> str:
        return self.key_id

    def needs_a_copy(self) -> bool:
        """Generated here and no copy known elsewhere: its file on this machine
        (or its sealed copy in this database) is the only one. (An imported or
        adopted key came from a copy.)"""
        return self.origin == self.GENERATED and self.copy_held_at is None and self.destroyed_at is None

    def is_sealed(self) -> bool:
        """Held in the metadata database, where every host finds it."""
        return bool(self.sealed_key)


class KeyRotation(Job):
    """Making a new master key active and re-wrapping every backup's data key
    (and re-sealing the catalog's secrets) with it, as a job with progress."""

    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUS_CHOICES = [
        (QUEUED, "Queued"),
        (RUNNING, "Running"),
        (SUCCEEDED, "Succeeded"),
        (FAILED, "Failed"),
        (CANCELLED, "Cancelled"),
    ]
    ACTIVE_STATUSES = (QUEUED, RUNNING)

    new_key = models.ForeignKey(Key, models.PROTECT, related_name="rotations")
    previous_key_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    total = models.PositiveIntegerField(default=0)  # backups to re-wrap
    done = models.PositiveIntegerField(default=0)
    summary = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Key rotation #{self.pk} to {self.new_key}"


class Verification(Job):
    """Evidence that a backup can be read back (checksum) or restored (restore test)."""

    CHECKSUM, RESTORE = "checksum", "restore"
    KIND_CHOICES = [(CHECKSUM, "Checksum"), (RESTORE, "Test restore")]
    QUEUED, RUNNING, PASSED, FAILED, CANCELLED = "queued", "running", "passed", "failed", "cancelled"
    STATUS_CHOICES = [(s, s.capitalize()) for s in (QUEUED, RUNNING, PASSED, FAILED, CANCELLED)]
    ACTIVE_STATUSES = (QUEUED, RUNNING)
    TRIGGER_CHOICES = [("manual", "Manual"), ("policy", "Policy"), ("command", "Command"), ("api", "API")]

    backup = models.ForeignKey(Backup, models.CASCADE, related_name="verifications")
    source = models.ForeignKey(Source, models.CASCADE, related_name="verifications")
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    trigger = models.CharField(max_length=20, choices=TRIGGER_CHOICES, default="manual")
    triggered_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    copy = models.ForeignKey(
        Copy, models.SET_NULL, null=True, blank=True, related_name="+", help_text="the copy a restore test read"
    )
    summary = models.CharField(max_length=500, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    restore_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of backup #{self.backup_id}"

    def get_absolute_url(self) -> str:
        return reverse("verification_detail", args=[self.pk])


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise TypeError("Audit events are append-only")

    def delete(self) -> NoReturn:
        raise TypeError("Audit events are append-only")


class AuditEvent(models.Model):
    """Append-only record of a state change: who did what to which object."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    # The hash chain: hash = SHA-256(prev_hash ‖ canonical content), prev_hash
    # the hash of the event before it (by id), so an edited, deleted or
    # reordered row breaks the chain where it happened.
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("Audit events are append-only")
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("audit_detail", args=[self.pk])

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("Audit events are append-only")

    def changes_display(self) -> str:
        return json.dumps(self.changes, sort_keys=True, default=str) if self.changes else ""

    def hashed_fields(self) -> dict[str, Any]:
        """The content the chain hash covers (see catalog.audit)."""
        from catalog.audit import HASHED_FIELDS

        return {name: getattr(self, name) for name in HASHED_FIELDS}

    def hash_matches(self) -> bool:
        """False when the row was edited after it was written."""
        from catalog.audit import chain_hash

        return chain_hash(self.prev_hash, self.hashed_fields()) == self.hash


# Monitoring and the API keep their models beside their code; importing them
# here registers them with the catalog app.
from catalog.alerts.models import Alert, Channel, Notification, StatusChange  # noqa: E402,F401
from catalog.api.models import ApiToken  # noqa: E402,F401


class RestoreServer(SealedSecrets):
    """Another PostgreSQL or MariaDB/MySQL server a backup of a source of the
    same engine may be restored onto, as a new database, when its source's own
    server is not the place (gone, or production that must not carry a copy).
    Its password never leaves `secret_token`; `server_version` is what the
    last connection check found, so pages can say which backups it can take
    without connecting."""

    # Where Strongroom connects to create, rename and drop databases: the
    # server's maintenance database, present on every cluster. A MariaDB
    # server is reached in no database.
    MAINTENANCE_DATABASE = "postgres"
    ENGINE_CHOICES = [("postgresql", "PostgreSQL"), ("mariadb", "MariaDB or MySQL")]

    name = models.CharField(max_length=100, unique=True)
    engine = models.CharField(
        max_length=20,
        choices=ENGINE_CHOICES,
        default="postgresql",
        help_text="It takes backups of sources of this engine.",
    )
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=5432, validators=PORT_VALIDATORS)
    user = models.CharField(
        max_length=255, help_text="The role Strongroom connects as; it must be able to create databases (CREATEDB)."
    )
    sslmode = models.CharField("SSL mode", max_length=20, blank=True)
    server_version = models.CharField(max_length=100, blank=True)
    checked_at = models.DateTimeField("last checked", null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("server_detail", args=[self.pk])

    def connection_params(self, secrets: Mapping[str, str | None] | None = None) -> dict[str, str | int]:
        """psycopg keywords for the maintenance database (with the password).
        `secrets` overrides the stored ones where given, so that a form can
        be tested before it is saved."""
        params: dict[str, str | int] = {
            "host": self.host,
            "port": self.port or DEFAULT_PORTS[self.engine],
            "dbname": self.MAINTENANCE_DATABASE if self.engine == "postgresql" else "",
            "user": self.user,
        }
        if self.sslmode:
            params["sslmode"] = self.sslmode
        password = self.secrets(secrets).get("password")
        if password:
            params["password"] = password
        return params

    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def version_display(self) -> str:
        """ "15.4" of "15.4 (Debian 15.4-1.pgdg120+1)", "10.11.19" of
        "10.11.19-MariaDB-0+deb12u1"; "" before the first check."""
        return self.server_version.split()[0].split("-")[0] if self.server_version else ""

    def engine_version(self) -> str:
        """ "PostgreSQL 15.4", "MariaDB 10.11.19", "MySQL 8.0.36"; "" before the first check."""
        if not self.server_version:
            return ""
        if self.engine == "mariadb":
            flavour = "MariaDB" if "mariadb" in self.server_version.lower() else "MySQL"
            return f"{flavour} {self.version_display()}"
        return f"PostgreSQL {self.version_display()}"

    def major_release(self) -> str:
        if self.engine == "mariadb":
            from catalog.engine.mariadb_restore import release

            return release(self.server_version)
        return major_release(self.server_version)

    def describe(self) -> str:
        """The server in words, without any secret."""
        return f"{self.name} ({self.address()}, {self.engine_version() or 'version not checked yet'})"

    def refusal_for(self, backup_version: str, version: str | None = None) -> str:
        """Why a backup taken on `backup_version` cannot go to this server (at
        `version`, by default the recorded one), in words; "" when it can or
        when either version is unknown. A newer server is fine."""
        from catalog.engine.dumpers import major_version

        version = version or self.server_version
        if self.engine == "mariadb":
            from catalog.engine.mariadb_restore import refusal_for

            return refusal_for(backup_version, version)
        if not version or not backup_version or major_version(version) >= major_version(backup_version):
            return ""
        return (
            f"PostgreSQL {major_release(version)} is older than the backup's {major_release(backup_version)}: "
            "pg_restore output from a newer server is not guaranteed to load into an older one."
        )


def major_release(version: str | None) -> str:
    """A PostgreSQL major release as people name it: "15" of "15.4", but
    "9.6" of "9.6.24" (before 10, the major release had two numbers)."""
    numbers = version.split()[0].split(".") if version else [""]
    return ".".join(numbers[:2]) if numbers[0].isdigit() and int(numbers[0]) < 10 else numbers[0]
