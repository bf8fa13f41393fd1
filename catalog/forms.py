import os
from collections.abc import Iterable
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django.http import QueryDict

from catalog import exports, queues, schedules
from catalog.endpoints import endpoint_problem
from catalog.engine.errors import EngineError
from catalog.engine.storage.base import outside_roots
from catalog.models import (
    COMPRESSION_LEVELS,
    DEFAULT_PORTS,
    EXPORT_FORMATS,
    FORMAT_CHOICES,
    FORMATS_BY_ENGINE,
    MAX_DAYS,
    MAX_DUMP_JOBS,
    TABLE_CHOICE_FORMATS,
    Backup,
    BackupPlan,
    BackupQuerySet,
    Destination,
    RestoreServer,
    Source,
    Verification,
    host_conflict,
)

KEEP_HELP = "Leave blank to keep the one that is stored."
MAX_KEEP_DAYS = MAX_DAYS  # how long "Back up now" may keep a backup: a hundred years


def secret_field(label: str, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


# Fields that came after the others and may be left out of a form (older
# clients, scripts): empty keeps the stored value, so it is not a change.
KEPT_WHEN_EMPTY = ("grace_minutes", "size_tolerance_percent", "keep_manual_days", "dump_jobs")


class ModelBounds(forms.ModelForm):
    """A model form whose number inputs carry the model's own bounds (its
    MinValueValidator and MaxValueValidator, catalog/models.py) as min and max,
    so the browser says what fits before the server refuses it; and whose
    fields of KEPT_WHEN_EMPTY, left out or empty, keep the stored value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in KEPT_WHEN_EMPTY:
            if name in self.fields:
                self.fields[name].required = False
        for name, field in self.fields.items():
            if not isinstance(field, forms.IntegerField):
                continue
            try:
                validators = self._meta.model._meta.get_field(name).validators
            except FieldDoesNotExist:
                continue
            highest = [v.limit_value for v in validators if isinstance(v, MaxValueValidator)]
            lowest = [v.limit_value for v in validators if isinstance(v, MinValueValidator)]
            if highest:
                field.widget.attrs["max"] = min(highest)
            if lowest:
                field.widget.attrs["min"] = max(lowest)

    def clean(self) -> dict[str, Any]:
        super().clean()
        for name in KEPT_WHEN_EMPTY:
            if name in self.fields and name not in self.errors and self.cleaned_data.get(name) is None:
                self.cleaned_data[name] = getattr(self.instance, name)
        return self.cleaned_data


def really_changed(form: forms.BaseForm) -> list[str]:
    return [
        name
        for name in form.changed_data
        if name not in KEPT_WHEN_EMPTY or form.cleaned_data.get(name) != form.initial.get(name)
    ]


class SourceForm(ModelBounds):
    password = secret_field("Password")
    dsn = secret_field("Connection string (DSN)", "Instead of the fields above, e.g. postgresql://user:pw@host:5432/db")

    class Meta:
        model = Source
        fields = [
            "name",
            "engine",
            "host",
            "port",
            "dbname",
            "user",
            "password",
            "dsn",
            "sslmode",
            "sqlite_path",
            "rpo_minutes",
            "rto_minutes",
            "grace_minutes",
            "paused",
        ]
        labels = {"sslmode": "SSL mode"}
        help_texts = {
            "sslmode": "Optional: disable, require, verify-full …",
            "sqlite_path": "Absolute path of the database file on the worker machine.",
            "rpo_minutes": "Most data you can afford to lose, in minutes.",
            "rto_minutes": "Longest a restore may take, in minutes.",
            "paused": "No alert about this source while paused (for maintenance); its backups still run.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            self.fields["password"].help_text = KEEP_HELP
            self.fields["dsn"].help_text = KEEP_HELP + " " + self.fields["dsn"].help_text

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("engine") == "sqlite":
            path = data.get("sqlite_path", "")
            if not path or not os.path.isabs(path):
                self.add_error("sqlite_path", "Give the absolute path of the SQLite database file.")
            return data
        if data.get("engine") == "mariadb":
            self.clean_mariadb(data)
            return data
        has_dsn = data.get("dsn") or (self.instance.pk and self.instance.uses_dsn())
        if not has_dsn:
            for name in ("host", "dbname", "user"):
                if not data.get(name):
                    self.add_error(name, "Required unless you give a connection string.")
        return data

    def clean_mariadb(self, data: dict[str, Any]) -> None:
        """MariaDB/MySQL: fields only (no connection string), its own port
        when the field was left empty or at PostgreSQL's after switching
        engine, and an SSL mode the client tools understand."""
        for name in ("host", "dbname", "user"):
            if not data.get(name):
                self.add_error(name, "Required for a MariaDB or MySQL source.")
        data["dsn"] = None  # hidden for this engine; a stored one is kept but not used
        switched = not self.instance.pk or self.initial.get("engine") != "mariadb"
        if data.get("port") is None or (switched and data.get("port") == DEFAULT_PORTS["postgresql"]):
            data["port"] = self.instance.port = DEFAULT_PORTS["mariadb"]
        if data.get("sslmode", "") not in MARIADB_SSL_MODES:
            self.add_error(
                "sslmode",
                "For MariaDB or MySQL: leave it empty (or prefer) to use TLS when the server offers it, "
                "disable, require (encrypted, certificate not checked) or verify-full (certificate and host "
                "name checked).",
            )

    def secrets(self) -> dict[str, str | None]:
        return {"password": self.cleaned_data.get("password"), "dsn": self.cleaned_data.get("dsn")}

    def changed_fields(self) -> list[str]:
        return [name for name in really_changed(self) if name not in ("password", "dsn")]


# What catalog/engine/mariadb.py turns into the client tools' and PyMySQL's SSL settings.
MARIADB_SSL_MODES = ("", "prefer", "disable", "require", "verify-full")


def secret_text_field(label: str, help_text: str = "") -> forms.CharField:
    """A multi-line secret (a private key, a JSON key file): never rendered back."""
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
        help_text=help_text,
    )


class DestinationForm(ModelBounds):
    # Each kind's secrets (Destination.SECRET_NAMES); only the chosen kind's are kept.
    secret_access_key = secret_field("Secret access key")
    account_key = secret_field("Account key", "The storage account's access key. Or give a SAS token instead.")
    sas_token = secret_field(
        "SAS token", "A shared access signature for the container (read, write, delete, list), instead of the key."
    )
    service_account_json = secret_text_field(
        "Service account key (JSON)",
        "The JSON key file of a service account that may read, write, list and delete in the bucket.",
    )
    password = secret_field("Password", "The SFTP user's password, if it signs in with one.")
    private_key = secret_text_field(
        "Private key", "An OpenSSH or PEM private key for the SFTP user (ed25519, ECDSA or RSA)."
    )
    private_key_passphrase = secret_field("Key passphrase", "Only if the private key is encrypted.")

    class Meta:
        model = Destination
        # In the order each kind shows its own (static/js/strongroom.js hides the others').
        fields = [
            "name",
            "kind",
            "account_name",
            "bucket",
            "prefix",
            "endpoint_url",
            "region",
            "access_key_id",
            "secret_access_key",
            "account_key",
            "sas_token",
            "service_account_json",
            "server",
            "server_port",
            "username",
            "password",
            "private_key",
            "private_key_passphrase",
            "path",
            "host",
            "offsite",
            "immutable_days",
            "lock_mode",
            "quota_gb",
        ]
        labels = {"path": "Directory"}
        help_texts = {
            "immutable_days": "S3 only: each copy and its manifest are locked (Object Lock) for this many days "
            "after they are written. The bucket must have been created with Object Lock. Leave empty for none.",
            "lock_mode": "Governance can be lifted by a user with special permission; compliance by nobody, "
            "not even the account root, until the date passes.",
            "quota_gb": "Backups that would go over this are refused up front. Leave empty for no quota.",
            "account_name": "The Azure storage account.",
            "server": "Host name or address of the SFTP server, as the worker machines reach it.",
            "server_port": "Leave empty for 22.",
            "username": "The SFTP user.",
            "offsite": "This copy lives away from the database server (counts for 3-2-1).",
        }

    # Where kinds share a field, each names it and explains it in its own words
    # (rendered as data-kind-label / data-kind-help; the script swaps them).
    KIND_LABELS = {
        "bucket": {"s3": "Bucket", "gcs": "Bucket", "azure": "Container"},
        "endpoint_url": {"azure": "Blob service URL"},
        "path": {"local": "Directory", "sftp": "Directory on the server"},
    }
    KIND_HELP = {
        "bucket": {
            "s3": "The S3 bucket.",
            "gcs": "The Google Cloud Storage bucket.",
            "azure": "The blob container in the storage account.",
        },
        "prefix": {
            "s3": "Folder inside the bucket, e.g. strongroom/",
            "gcs": "Folder inside the bucket, e.g. strongroom/",
            "azure": "Folder inside the container, e.g. strongroom/",
        },
        "endpoint_url": {
            "s3": "Leave blank for AWS; e.g. https://minio.example:9000 for MinIO or R2.",
            "azure": "Leave blank for https://<account>.blob.core.windows.net; give it for another cloud or "
            "Azurite, e.g. http://azurite.example:10000/devstoreaccount1.",
            "gcs": "Leave blank for Google's own service; only for an emulator or a private endpoint.",
        },
        "path": {
            "sftp": "The directory on the server, which must exist; a relative path starts in the user's home.",
        },
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            stored = self.instance.secrets()
            for name in self.secret_names():
                if stored.get(name):
                    self.fields[name].help_text = KEEP_HELP
        self.fields["lock_mode"].required = False  # only read when Object Lock days are set
        roots = ", ".join(str(root) for root in settings.LOCAL_DESTINATION_ROOTS)
        inside = roots or "an allowed directory"
        local_path = f"Absolute path of a directory on the worker machine, inside {inside} (LOCAL_DESTINATION_ROOTS)."
        help_by_kind = {**self.KIND_HELP, "path": {**self.KIND_HELP["path"], "local": local_path}}
        for name, texts in help_by_kind.items():
            field = self.fields[name]
            field.kind_help = texts  # type: ignore[attr-defined]
            field.help_text = texts.get(self.instance.kind) or next(iter(texts.values()))
        for name, labels in self.KIND_LABELS.items():
            field = self.fields[name]
            field.kind_labels = labels  # type: ignore[attr-defined]
            field.label = labels.get(self.instance.kind) or field.label
        self.fields["host"] = forms.ChoiceField(
            label="Host",
            choices=host_choices(self.instance.host),
            required=False,
            help_text="The host whose disk holds the folder: backups to it, and whatever reads it, run on that "
            "host's own queue. Every host: the same folder is mounted at this path on every host, or there is "
            "only one host.",
        )

    @staticmethod
    def secret_names() -> list[str]:
        return [name for names in Destination.SECRET_NAMES.values() for name in names]

    def clean_lock_mode(self) -> str:
        return self.cleaned_data.get("lock_mode") or "GOVERNANCE"

    def clean_host(self) -> str:
        # Only a local folder is on one host's disk (kind is cleaned before host).
        return self.cleaned_data.get("host", "") if self.cleaned_data.get("kind") == "local" else ""

    def check_plans_keep_one_host(self, host: str) -> None:
        """A plan's backup runs on one host: this destination may not move to
        another host's disk than its plans' other local folders."""
        if not self.instance.pk:
            return
        moved = Destination(name=self.instance.name, kind="local", host=host)
        for plan in self.instance.plans.all():
            others = list(plan.destinations.exclude(pk=self.instance.pk))
            if problem := host_conflict([moved, *others]):
                self.add_error("host", f"Plan {plan} also writes here. {problem}")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        kind = data.get("kind")
        if kind == Destination.LOCAL:
            path = data.get("path", "")
            if not path or not os.path.isabs(path):
                self.add_error("path", "Give the absolute path of a directory.")
            elif problem := outside_roots(path, settings.LOCAL_DESTINATION_ROOTS):
                self.add_error("path", problem)
            self.check_plans_keep_one_host(data.get("host", ""))
        elif kind in Destination.OBJECT_STORES and not data.get("bucket"):
            self.add_error("bucket", "Name the container." if kind == Destination.AZURE else "Name the bucket.")
        if kind == Destination.AZURE and not data.get("account_name") and not data.get("endpoint_url"):
            self.add_error("account_name", "Name the storage account, or give the blob service URL.")
        if kind == Destination.AZURE and "?" in data.get("endpoint_url", ""):
            # A SAS token pasted there would be shown on the destination's page, as part of its URL.
            self.add_error(
                "endpoint_url", "Give the blob service URL without a query: a SAS token goes in its own field."
            )
        if kind == Destination.SFTP:
            self.clean_sftp(data)
        if data.get("immutable_days") and kind not in Destination.IMMUTABLE_KINDS:
            self.add_error("immutable_days", "Object Lock needs an S3 destination.")
        endpoint = data.get("endpoint_url", "") if kind in Destination.OBJECT_STORES else ""
        if endpoint and not endpoint.startswith(("http://", "https://")):
            self.add_error("endpoint_url", "Start the endpoint URL with http:// or https://")
        elif endpoint and (problem := endpoint_problem(endpoint)):
            self.add_error("endpoint_url", problem)
        return data

    def clean_sftp(self, data: dict[str, Any]) -> None:
        for field, words in (("server", "Name the SFTP server."), ("username", "Name the SFTP user.")):
            if not data.get(field):
                self.add_error(field, words)
        if (server := data.get("server")) and (problem := endpoint_problem(f"sftp://{server}")):
            self.add_error("server", problem)
        stored = self.instance.secrets() if self.instance.pk else {}
        if not any(data.get(name) or stored.get(name) for name in ("password", "private_key")):
            self.add_error("password", "Give the user's password or a private key.")

    def secrets(self) -> dict[str, str | None]:
        return {name: self.cleaned_data.get(name) for name in self.secret_names()}

    def changed_fields(self) -> list[str]:
        secret = set(self.secret_names())
        return [name for name in self.changed_data if name not in secret]


def host_choices(current: str) -> list[tuple[str, str]]:
    """Every host (blank), then the hosts whose workers are seen alive and
    this one (first), and the destination's own host even if it went quiet."""
    here = settings.HOST_NAME
    beats = queues.alive_heartbeats()
    own_queue = {beat.host for beat in beats if beat.queue == settings.HOST_CLUSTER_PREFIX + beat.host}
    hosts = {beat.host for beat in beats} | {here} | ({current} if current else set())

    def label(host: str) -> str:
        notes = ["this host"] if host == here else []
        if host not in own_queue:
            notes.append("its own queue's workers are not running")
        return f"{host} ({', '.join(notes)})" if notes else host

    ordered = sorted(hosts, key=lambda host: (host != here, host))
    return [("", "Every host (a shared mount, or one host only)")] + [(host, label(host)) for host in ordered]


class RestoreServerForm(ModelBounds):
    password = secret_field("Password")

    class Meta:
        model = RestoreServer
        fields = ["name", "engine", "host", "port", "user", "password", "sslmode"]
        help_texts = {
            "name": "How the restore wizard shows it and manage.py restore --server names it.",
            "host": "Host name or address, as the worker machines reach it.",
            "port": "PostgreSQL's is usually 5432, MariaDB's and MySQL's 3306.",
            "user": "The role or user Strongroom connects as; it must be able to create databases "
            "(PostgreSQL: CREATEDB; MariaDB/MySQL: CREATE and DROP).",
            "sslmode": "Optional: disable, require, verify-full …",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            self.fields["password"].help_text = KEEP_HELP
        # Servers were PostgreSQL only before: a form (or a script) without the field keeps the engine.
        self.fields["engine"].required = False

    def clean_engine(self) -> str:
        return self.cleaned_data.get("engine") or self.instance.engine

    def clean(self) -> dict[str, Any]:
        """A MariaDB server's port, 3306, when left empty or at PostgreSQL's
        after choosing the engine (as the source form does)."""
        data = super().clean()
        if data.get("engine") == "mariadb":
            switched = not self.instance.pk or self.initial.get("engine") != "mariadb"
            if data.get("port") is None or (switched and data.get("port") == DEFAULT_PORTS["postgresql"]):
                data["port"] = self.instance.port = DEFAULT_PORTS["mariadb"]
        return data

    def secrets(self) -> dict[str, str | None]:
        return {"password": self.cleaned_data.get("password")}

    def changed_fields(self) -> list[str]:
        # An engine left out kept the stored one: not a change.
        kept = self.cleaned_data.get("engine") == self.initial.get("engine")
        return [name for name in self.changed_data if name != "password" and not (name == "engine" and kept)]


RETENTION_FIELDS = [
    "retention_mode",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_last",
    "keep_days",
    "keep_minimum",
    "keep_manual_days",
]
VERIFICATION_FIELDS = ["verify_new_backups", "restore_test_days", "checksum_all_days"]
RETENTION_HELP = {
    "restore_test_days": "Restores the latest backup into a scratch database and compares it. 0: never.",
    "checksum_all_days": "Reads every retained copy back. 0: never.",
    "keep_minimum": "Kept whatever the rule says (the newest good backup is always kept).",
    "keep_last": "The newest N good backups.",
    "keep_days": "Every good backup started within this many days.",
    "keep_manual_days": "Back up now, API and labelled backups: kept this long apart from the rule, then it "
    "judges them. 0: at once.",
}


class RetentionForm(ModelBounds):
    """Only the retention fields: the live preview reads them from the plan form."""

    class Meta:
        model = BackupPlan
        fields = RETENTION_FIELDS
        help_texts = RETENTION_HELP


class SchedulePresets(forms.Form):
    """A schedule chosen as a preset (every hour, day, week or month, at a
    time) or as a cron of one's own. A preset becomes a cron here
    (catalog/schedules.py), so a plan keeps one cron whatever was chosen, and
    a cron a preset can make is shown as that preset when edited again."""

    schedule_preset = forms.ChoiceField(label="Runs", choices=schedules.PRESET_CHOICES, required=False)
    schedule_minute = forms.IntegerField(label="Minutes past the hour", min_value=0, max_value=59, required=False)
    schedule_time = forms.TimeField(
        label="At", required=False, widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )
    schedule_weekday = forms.ChoiceField(label="On", choices=schedules.WEEKDAY_CHOICES, required=False)
    schedule_day = forms.IntegerField(
        label="Day of the month",
        min_value=1,
        max_value=schedules.LAST_MONTHLY_DAY,
        required=False,
        help_text="1 to 28, so that every month has it.",
    )

    PRESET_FIELDS = ("schedule_preset", "schedule_minute", "schedule_time", "schedule_weekday", "schedule_day")
    # What each preset needs, and the argument of schedules.preset_cron it fills.
    NEEDS = {
        schedules.HOURLY: {"schedule_minute": "minute"},
        schedules.DAILY: {"schedule_time": "at"},
        schedules.WEEKLY: {"schedule_time": "at", "schedule_weekday": "weekday"},
        schedules.MONTHLY: {"schedule_time": "at", "schedule_day": "day"},
    }
    SCHEDULE_HELP = (
        "Cron: minute hour day-of-month month day-of-week, in the server's time zone. On the nights "
        "the clocks change, a time that happens twice runs once and a time skipped runs an hour later."
    )

    def show_schedule_as_preset(self, schedule: str) -> None:
        """Initial values from the saved cron (a posted form keeps what was posted)."""
        self.fields["schedule"].required = False  # with a preset, the cron box is not read
        self.fields["schedule"].help_text = self.SCHEDULE_HELP
        preset, values = schedules.preset_of(schedule)
        self.initial.setdefault("schedule_preset", preset)
        self.initial.setdefault("schedule_minute", values.get("minute", 0))
        self.initial.setdefault("schedule_time", values.get("at", "03:00"))
        self.initial.setdefault("schedule_weekday", values.get("weekday", "1"))
        self.initial.setdefault("schedule_day", values.get("day", 1))

    def schedule_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in (*self.PRESET_FIELDS, "schedule")]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        # A client that posts only a cron (a script, an older page) chose the cron.
        preset = data.get("schedule_preset") or schedules.CRON
        if preset == schedules.CRON:
            schedule, field = " ".join((data.get("schedule") or "").split()), "schedule"
            if not schedule and "schedule" not in self.errors:
                self.add_error("schedule", "Enter a cron schedule, or choose how often above.")
                return data
        else:
            needs = self.NEEDS[preset]
            for name in needs:
                if data.get(name) in (None, "") and name not in self.errors:
                    self.add_error(
                        name, f"Say this for a schedule that runs {dict(schedules.PRESET_CHOICES)[preset].lower()}."
                    )
            if any(name in self.errors for name in needs):
                return data
            schedule = schedules.preset_cron(preset, **{arg: data[name] for name, arg in needs.items()})
            field = "schedule_preset"
        if "schedule" in self.errors:
            return data
        if error := schedules.validate_cron(schedule):
            self.add_error(field, error)
        else:
            data["schedule"] = schedule
        return data

    def schedule_changes(self, changed: Iterable[str]) -> list[str]:
        """The changed fields for the audit trail: the cron, not the preset inputs that made it."""
        changed = [name for name in changed if name not in self.PRESET_FIELDS and name != "schedule"]
        if self.cleaned_data.get("schedule") != self.initial.get("schedule"):
            changed.append("schedule")
        return changed


class SchedulePreviewForm(SchedulePresets):
    """The plan form's schedule inputs alone, for the live preview."""

    schedule = forms.CharField(required=False, max_length=100)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.show_schedule_as_preset("")


class SourceSelect(forms.Select):
    """The plan's source, each option saying its engine (data-engine) for
    strongroom.js to offer only the formats that engine produces."""

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        if getattr(value, "instance", None) is not None:
            option["attrs"]["data-engine"] = value.instance.engine
        return option


class FormatSelect(forms.Select):
    """Each format says which engines produce it (data-engines); those the
    chosen source's engine cannot produce are hidden (strongroom.js shows them
    again when another source is chosen)."""

    engine: str | None = None  # the plan's source's engine, when it has one

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        engines = [engine for engine, formats in FORMATS_BY_ENGINE.items() if value in formats]
        option["attrs"]["data-engines"] = " ".join(engines)
        if self.engine and self.engine not in engines:
            option["attrs"].update(hidden=True, disabled=True)
        return option


def formats_in_words(formats: Iterable[str]) -> str:
    """Each format's label in quotes, since some labels hold a comma themselves."""
    labels = dict(FORMAT_CHOICES)
    return ", ".join(f"“{labels[fmt]}”" for fmt in formats)


class DestinationChoice(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj} (on {obj.host}'s disk)" if obj.bound_host() else str(obj)


class PlanForm(SchedulePresets, ModelBounds):
    destinations = DestinationChoice(
        queryset=Destination.objects.all(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Pick at least one destination."},
    )

    class Meta:
        model = BackupPlan
        fields = [
            "name",
            "source",
            "schedule",
            "format",
            "dump_jobs",
            "compression",
            "compression_level",
            "encrypt",
            "destinations",
            "enabled",
            "size_tolerance_percent",
            *RETENTION_FIELDS,
            *VERIFICATION_FIELDS,
        ]
        help_texts = {
            **RETENTION_HELP,
            "compression_level": (
                "Empty: the default (zstd 1, gzip 6). Higher zstd levels are slower, and on most dumps barely smaller."
            ),
            "encrypt": "AES-256-GCM with a fresh data key per backup, wrapped by the active master key.",
            "enabled": "Disabled plans keep their backups but are not run on schedule.",
            "format": (
                "PostgreSQL directory dumps several tables at once, for a large database on a server with "
                "cores to spare; it is stored as one tar of pg_dump's files. "
                "Physical base backup (PostgreSQL only) copies the whole cluster for point-in-time "
                "recovery; it runs only while the source's continuous protection is on, and each one "
                "counts as good once the WAL it needs is stored."
            ),
            "dump_jobs": (
                f"Directory format only (1 to {MAX_DUMP_JOBS}): pg_dump dumps this many tables at once, with a "
                "connection to the source for each and one more. More than the source server's spare cores "
                "gains nothing. Other formats keep the number but do not use it."
            ),
        }
        widgets = {"source": SourceSelect, "format": FormatSelect}
        error_messages = {
            "format": {"invalid_choice": "Choose one of the formats offered for this source."},
            "dump_jobs": {
                code: f"pg_dump runs from 1 to {MAX_DUMP_JOBS} jobs at once: each one is a connection to the source."
                for code in ("min_value", "max_value")
            },
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in RETENTION_FIELDS:
            self.fields[name].widget.attrs["class"] = "retention-field"
        # Its bounds depend on the compression chosen (BackupPlan.compression_level_problem);
        # the browser gets the widest.
        self.fields["compression_level"].widget.attrs.update(
            min=min(low for low, _ in COMPRESSION_LEVELS.values()),
            max=max(high for _, high in COMPRESSION_LEVELS.values()),
        )
        # The export choice is not a form field: its inputs come from the table
        # picker (catalog/exports.py), which clean() reads and shows again with its errors.
        self.export_picker: dict[str, Any] | None = None
        self.saved_export_choice = (self.instance.export_tables, self.instance.export_sets)
        self.offer_formats()
        self.show_schedule_as_preset(self.instance.schedule)
        if Destination.objects.filter(kind="local").exclude(host="").exists():
            self.fields["destinations"].help_text = (
                "A backup runs on one host: local folders on one host's disk at most, with any S3 "
                "destinations and folders every host mounts."
            )

    def offer_formats(self) -> None:
        """Only formats some source can produce (no SQLite file where every
        source is PostgreSQL, no base backup without a PostgreSQL source); of
        those, the plan's source's own shown, the others hidden until another
        source is chosen. The plan's current format stays, to be seen and changed."""
        source = self.instance.source if self.instance.source_id else None
        engines = set(Source.objects.values_list("engine", flat=True)) | ({source.engine} if source else set())
        possible = {fmt for engine in engines or FORMATS_BY_ENGINE for fmt in FORMATS_BY_ENGINE[engine]}
        field = cast(forms.ChoiceField, self.fields["format"])
        offered = cast(list[tuple[str, str]], field.choices)  # the model field's choices, a list
        field.choices = [
            (value, label) for value, label in offered if value in possible or value == self.instance.format
        ]
        field.widget.engine = source.engine if source else None

    def main_fields(self) -> list[forms.BoundField]:
        grouped = [*RETENTION_FIELDS, *VERIFICATION_FIELDS, *self.PRESET_FIELDS, "schedule"]
        return [self[name] for name in self.fields if name not in grouped]

    def verification_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in VERIFICATION_FIELDS]

    def retention_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in RETENTION_FIELDS]

    def clean_destinations(self) -> Any:
        destinations = self.cleaned_data["destinations"]
        if problem := host_conflict(destinations):
            raise forms.ValidationError(problem)
        return destinations

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        source, fmt = data.get("source"), data.get("format")
        if source and fmt is None and self.data.get("format") in dict(FORMAT_CHOICES):
            # A format no source here produces (not offered at all): said like the others.
            fmt = self.data["format"]
            del self.errors["format"]
        if source and fmt and fmt not in FORMATS_BY_ENGINE[source.engine]:
            self.add_error(
                "format",
                f"A {source.get_engine_display()} source cannot produce "
                f"{formats_in_words([fmt])}; choose one of: "
                f"{formats_in_words(FORMATS_BY_ENGINE[source.engine])}.",
            )
        elif source and fmt in EXPORT_FORMATS:
            self.clean_export_choice(source)
        elif source and fmt in TABLE_CHOICE_FORMATS:
            self.clean_dump_tables(source)
        elif fmt and fmt not in TABLE_CHOICE_FORMATS:  # a dump has no table choice to keep
            self.instance.export_tables, self.instance.export_sets = [], []
        return data

    def clean_dump_tables(self, source: Source) -> None:
        """A MariaDB dump's tables: none picked is the whole database; picked
        ones are dumped whole (mariadb-dump has one --where for every table)."""
        tables, sets = exports.selection_from(cast(QueryDict, self.data))
        try:
            live = exports.live_tables(source)
        except EngineError as exc:
            self.add_error("source", f"Cannot list the tables of {source}: {exc}")
            return
        errors = exports.check_selection(source, tables, sets, live, filters=False)
        if not tables and not sets:
            errors.pop("all", None)  # nothing picked: the whole database, as before tables could be picked
        self.export_picker = exports.picker(source, tables, sets, errors, live)
        if errors:
            self.add_error(None, next(iter(errors.values())))
        self.instance.export_tables, self.instance.export_sets = tables, sets

    def clean_export_choice(self, source: Source) -> None:
        tables, sets = exports.selection_from(cast(QueryDict, self.data))  # bound to request.POST
        try:
            live = exports.live_tables(source)
        except EngineError as exc:
            self.add_error("source", f"Cannot list the tables of {source}: {exc}")
            return
        errors = exports.check_selection(source, tables, sets, live)
        self.export_picker = exports.picker(source, tables, sets, errors, live)
        if errors:
            self.add_error(
                None, errors.get("all") or errors.get("sets") or "A row filter is not valid; see the Tables section."
            )
        self.instance.export_tables, self.instance.export_sets = tables, sets

    def changed_fields(self) -> list[str]:
        changed = self.schedule_changes(really_changed(self))
        if (self.instance.export_tables, self.instance.export_sets) != self.saved_export_choice:
            changed += ["export_tables", "export_sets"]
        return changed


class PinForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.TextInput(attrs={"placeholder": "why it must be kept"}))
    legal_hold = forms.BooleanField(required=False, label="legal hold")


class RunBackupForm(forms.Form):
    label = forms.SlugField(
        required=False,
        max_length=100,
        help_text="Optional, e.g. pre-migration",
        widget=forms.TextInput(attrs={"placeholder": "label (optional)"}),
    )
    # Empty: the plan's manual rule (keep_manual_days) decides, and follows it when it changes.
    keep_days = forms.IntegerField(required=False, min_value=1, max_value=MAX_KEEP_DAYS, label="Keep for (days)")


class BackupFilterForm(forms.Form):
    source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, empty_label="All sources")
    plan = forms.ModelChoiceField(queryset=BackupPlan.objects.all(), required=False, empty_label="All plans")
    status = forms.ChoiceField(choices=[("", "Any status")] + Backup.STATUS_CHOICES, required=False)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def apply(self, backups: BackupQuerySet) -> BackupQuerySet:
        if not self.is_valid():
            return backups
        data = self.cleaned_data
        if data["source"]:
            backups = backups.filter(source=data["source"])
        if data["plan"]:
            backups = backups.filter(plan=data["plan"])
        if data["status"]:
            backups = backups.filter(status=data["status"])
        if data["since"]:
            backups = backups.filter(created_at__date__gte=data["since"])
        if data["until"]:
            backups = backups.filter(created_at__date__lte=data["until"])
        return backups


class VerificationFilterForm(forms.Form):
    source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, empty_label="All sources")
    kind = forms.ChoiceField(choices=[("", "Both kinds")] + Verification.KIND_CHOICES, required=False)
    status = forms.ChoiceField(choices=[("", "Any result")] + Verification.STATUS_CHOICES, required=False)

    def apply(self, jobs: QuerySet[Verification]) -> QuerySet[Verification]:
        if not self.is_valid():
            return jobs
        for name in ("source", "kind", "status"):
            if self.cleaned_data[name]:
                jobs = jobs.filter(**{name: self.cleaned_data[name]})
        return jobs


class PlanChoiceField(forms.ModelChoiceField):
    """Plans named with their source: two sources may each have a "Nightly"."""

    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.source} — {obj}"


class ImportForm(forms.Form):
    """Import a dump (catalog/imports.py): an uploaded file, or an object in a
    registered destination. The file comes after the source, plan and label,
    so that they have arrived when an upload over the limit is stopped."""

    source = forms.ModelChoiceField(queryset=Source.objects.order_by("name"), empty_label="Choose a source")
    plan = PlanChoiceField(
        queryset=BackupPlan.objects.select_related("source").order_by("source__name", "name"),
        required=False,
        empty_label="The source's plan",
        help_text="Its compression, encryption, destinations and retention apply to the import; "
        "empty: the source's one plan of whole dumps.",
    )
    label = forms.SlugField(
        required=False, max_length=100, help_text="Optional, e.g. from-old-host: letters, digits, - and _"
    )
    dump = forms.FileField(required=False, label="Dump file")
    destination = forms.ModelChoiceField(
        queryset=Destination.objects.order_by("name"),
        required=False,
        empty_label="—",
        label="An object in destination",
    )
    key = forms.CharField(
        required=False,
        max_length=1000,
        label="Object's key",
        help_text="Its key in that destination, e.g. exports/orders-2024.dump.gz",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        has_file, has_object = bool(data.get("dump")), bool(data.get("destination") or data.get("key"))
        if has_file == has_object:
            raise forms.ValidationError("Choose a file to upload, or name an object in a destination: one of the two.")
        if has_object and not (data.get("destination") and data.get("key", "").strip()):
            self.add_error("key", "Name both the destination and the object's key in it.")
        plan, source = data.get("plan"), data.get("source")
        if plan and source and plan.source_id != source.pk:
            self.add_error("plan", f"{plan} backs up {plan.source}, not {source}.")
        return data
