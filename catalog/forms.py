import os

from django import forms
from django.conf import settings

from catalog import exports
from catalog.engine.errors import EngineError
from catalog.engine.storage import outside_roots
from catalog.models import (BASE_BACKUP_FORMAT, EXPORT_FORMATS, FORMATS_BY_ENGINE, Backup, BackupPlan, Destination,
                             RestoreServer, Source, Verification)
from catalog.schedules import validate_cron

KEEP_HELP = "Leave blank to keep the one that is stored."


def secret_field(label, help_text=""):
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


# Monitoring fields that may be left out of a form (older clients, scripts):
# empty keeps the stored value, so it is not a change.
KEPT_WHEN_EMPTY = ("grace_minutes", "size_tolerance_percent")


def really_changed(form):
    return [name for name in form.changed_data
            if name not in KEPT_WHEN_EMPTY or form.cleaned_data.get(name) != form.initial.get(name)]


class SourceForm(forms.ModelForm):
    password = secret_field("Password")
    dsn = secret_field("Connection string (DSN)", "Instead of the fields above, e.g. postgresql://user:pw@host:5432/db")

    class Meta:
        model = Source
        fields = ["name", "engine", "host", "port", "dbname", "user", "password", "dsn", "sslmode",
                  "sqlite_path", "rpo_minutes", "rto_minutes", "grace_minutes", "paused"]
        labels = {"sslmode": "SSL mode"}
        help_texts = {
            "sslmode": "Optional: disable, require, verify-full …",
            "sqlite_path": "Absolute path of the database file on the worker machine.",
            "rpo_minutes": "Most data you can afford to lose, in minutes.",
            "rto_minutes": "Longest a restore may take, in minutes.",
            "paused": "No alert about this source while paused (for maintenance); its backups still run.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            self.fields["password"].help_text = KEEP_HELP
            self.fields["dsn"].help_text = KEEP_HELP + " " + self.fields["dsn"].help_text
        self.fields["grace_minutes"].required = False  # left empty: keeps the current grace (2 h by default)

    def clean_grace_minutes(self):
        grace = self.cleaned_data.get("grace_minutes")
        return self.instance.grace_minutes if grace is None else grace

    def clean(self):
        data = super().clean()
        if data.get("engine") == "sqlite":
            path = data.get("sqlite_path", "")
            if not path or not os.path.isabs(path):
                self.add_error("sqlite_path", "Give the absolute path of the SQLite database file.")
            return data
        has_dsn = data.get("dsn") or (self.instance.pk and self.instance.uses_dsn())
        if not has_dsn:
            for name in ("host", "dbname", "user"):
                if not data.get(name):
                    self.add_error(name, "Required unless you give a connection string.")
        return data

    def secrets(self):
        return {"password": self.cleaned_data.get("password"), "dsn": self.cleaned_data.get("dsn")}

    def changed_fields(self):
        return [name for name in really_changed(self) if name not in ("password", "dsn")]


class DestinationForm(forms.ModelForm):
    secret_access_key = secret_field("Secret access key")

    class Meta:
        model = Destination
        fields = ["name", "kind", "path", "bucket", "prefix", "endpoint_url", "region", "access_key_id",
                  "secret_access_key", "offsite", "immutable_days", "lock_mode", "quota_gb"]
        help_texts = {
            "path": "Absolute path of a directory on the worker machine.",
            "immutable_days": "S3 only: each copy and its manifest are locked (Object Lock) for this many days "
            "after they are written. The bucket must have been created with Object Lock. Leave empty for none.",
            "lock_mode": "Governance can be lifted by a user with special permission; compliance by nobody, "
            "not even the account root, until the date passes.",
            "quota_gb": "Backups that would go over this are refused up front. Leave empty for no quota.",
            "endpoint_url": "Leave blank for AWS; e.g. https://minio.example:9000 for MinIO or R2.",
            "prefix": "Folder inside the bucket, e.g. strongroom/",
            "offsite": "This copy lives away from the database server (counts for 3-2-1).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            self.fields["secret_access_key"].help_text = KEEP_HELP
        self.fields["lock_mode"].required = False  # only read when Object Lock days are set
        roots = ", ".join(str(root) for root in settings.LOCAL_DESTINATION_ROOTS)
        self.fields["path"].help_text += f" It must lie inside {roots or 'an allowed directory'} (LOCAL_DESTINATION_ROOTS)."

    def clean_lock_mode(self):
        return self.cleaned_data.get("lock_mode") or "GOVERNANCE"

    def clean(self):
        data = super().clean()
        if data.get("kind") == "local":
            path = data.get("path", "")
            if not path or not os.path.isabs(path):
                self.add_error("path", "Give the absolute path of a directory.")
            elif problem := outside_roots(path, settings.LOCAL_DESTINATION_ROOTS):
                self.add_error("path", problem)
            if data.get("immutable_days"):
                self.add_error("immutable_days", "Object Lock needs an S3 destination.")
        elif not data.get("bucket"):
            self.add_error("bucket", "Name the bucket.")
        endpoint = data.get("endpoint_url", "")
        if endpoint and not endpoint.startswith(("http://", "https://")):
            self.add_error("endpoint_url", "Start the endpoint URL with http:// or https://")
        return data

    def secrets(self):
        return {"secret_access_key": self.cleaned_data.get("secret_access_key")}

    def changed_fields(self):
        return [name for name in self.changed_data if name != "secret_access_key"]


class RestoreServerForm(forms.ModelForm):
    password = secret_field("Password")

    class Meta:
        model = RestoreServer
        fields = ["name", "host", "port", "user", "password", "sslmode"]
        help_texts = {
            "name": "How the restore wizard shows it and manage.py restore --server names it.",
            "host": "Host name or address, as the worker machines reach it.",
            "sslmode": "Optional: disable, require, verify-full …",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.has_secrets():
            self.fields["password"].help_text = KEEP_HELP

    def secrets(self):
        return {"password": self.cleaned_data.get("password")}

    def changed_fields(self):
        return [name for name in self.changed_data if name != "password"]


RETENTION_FIELDS = ["retention_mode", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_last",
                    "keep_days", "keep_minimum"]
VERIFICATION_FIELDS = ["verify_new_backups", "restore_test_days", "checksum_all_days"]
RETENTION_HELP = {
    "restore_test_days": "Restores the latest backup into a scratch database and compares it. 0: never.",
    "checksum_all_days": "Reads every retained copy back. 0: never.",
    "keep_minimum": "Kept whatever the rule says (the newest good backup is always kept).",
    "keep_last": "The newest N good backups.",
    "keep_days": "Every good backup started within this many days.",
}


class RetentionForm(forms.ModelForm):
    """Only the retention fields: the live preview reads them from the plan form."""

    class Meta:
        model = BackupPlan
        fields = RETENTION_FIELDS
        help_texts = RETENTION_HELP


class PlanForm(forms.ModelForm):
    destinations = forms.ModelMultipleChoiceField(
        queryset=Destination.objects.all(), widget=forms.CheckboxSelectMultiple, error_messages={"required": "Pick at least one destination."}
    )

    class Meta:
        model = BackupPlan
        fields = ["name", "source", "schedule", "format", "compression", "encrypt", "destinations", "enabled",
                  "size_tolerance_percent", *RETENTION_FIELDS, *VERIFICATION_FIELDS]
        help_texts = {
            **RETENTION_HELP,
            "schedule": "Cron: minute hour day-of-month month day-of-week.",
            "encrypt": "AES-256-GCM with a fresh data key per backup, wrapped by the active master key.",
            "enabled": "Disabled plans keep their backups but are not run on schedule.",
            "format": ("Physical base backup (PostgreSQL only) copies the whole cluster for point-in-time "
                       "recovery; it runs only while the source's continuous protection is on, and each one "
                       "counts as good once the WAL it needs is stored."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in RETENTION_FIELDS:
            self.fields[name].widget.attrs["class"] = "retention-field"
        self.fields["size_tolerance_percent"].required = False  # left empty: keeps the current tolerance
        # The export choice is not a form field: its inputs come from the table
        # picker (catalog/exports.py), which clean() reads and shows again with its errors.
        self.export_picker = None
        self.saved_export_choice = (self.instance.export_tables, self.instance.export_sets)
        self.offer_base_backups()

    def offer_base_backups(self):
        """A physical base backup is a PostgreSQL thing: not offered when the
        plan's source is another engine, or when no source is PostgreSQL."""
        source = self.instance.source if self.instance.source_id else None
        postgres = source.engine == "postgresql" if source else Source.objects.filter(engine="postgresql").exists()
        if not postgres and self.instance.format != BASE_BACKUP_FORMAT:
            field = self.fields["format"]
            field.choices = [(value, label) for value, label in field.choices if value != BASE_BACKUP_FORMAT]

    def clean_size_tolerance_percent(self):
        tolerance = self.cleaned_data.get("size_tolerance_percent")
        return self.instance.size_tolerance_percent if tolerance is None else tolerance

    def main_fields(self):
        grouped = RETENTION_FIELDS + VERIFICATION_FIELDS
        return [self[name] for name in self.fields if name not in grouped]

    def verification_fields(self):
        return [self[name] for name in VERIFICATION_FIELDS]

    def retention_fields(self):
        return [self[name] for name in RETENTION_FIELDS]

    def clean_schedule(self):
        schedule = " ".join(self.cleaned_data["schedule"].split())
        error = validate_cron(schedule)
        if error:
            raise forms.ValidationError(error)
        return schedule

    def clean(self):
        data = super().clean()
        source, fmt = data.get("source"), data.get("format")
        if source and fmt and fmt not in FORMATS_BY_ENGINE[source.engine]:
            allowed = ", ".join(FORMATS_BY_ENGINE[source.engine])
            self.add_error("format", f"A {source.get_engine_display()} source can be backed up as: {allowed}.")
        elif source and fmt in EXPORT_FORMATS:
            self.clean_export_choice(source)
        elif fmt and fmt not in EXPORT_FORMATS:  # a dump has no table choice to keep
            self.instance.export_tables, self.instance.export_sets = [], []
        return data

    def clean_export_choice(self, source):
        tables, sets = exports.selection_from(self.data)
        try:
            live = exports.live_tables(source)
        except EngineError as exc:
            self.add_error("source", f"Cannot list the tables of {source}: {exc}")
            return
        errors = exports.check_selection(source, tables, sets, live)
        self.export_picker = exports.picker(source, tables, sets, errors, live)
        if errors:
            self.add_error(None, errors.get("all") or errors.get("sets")
                           or "A row filter is not valid; see the Tables section.")
        self.instance.export_tables, self.instance.export_sets = tables, sets

    def changed_fields(self):
        changed = really_changed(self)
        if (self.instance.export_tables, self.instance.export_sets) != self.saved_export_choice:
            changed += ["export_tables", "export_sets"]
        return changed


class PinForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.TextInput(attrs={"placeholder": "why it must be kept"}))
    legal_hold = forms.BooleanField(required=False, label="legal hold")


class RunBackupForm(forms.Form):
    label = forms.SlugField(
        required=False, max_length=100, help_text="Optional, e.g. pre-migration", widget=forms.TextInput(attrs={"placeholder": "label (optional)"})
    )


class BackupFilterForm(forms.Form):
    source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, empty_label="All sources")
    plan = forms.ModelChoiceField(queryset=BackupPlan.objects.all(), required=False, empty_label="All plans")
    status = forms.ChoiceField(choices=[("", "Any status")] + Backup.STATUS_CHOICES, required=False)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def apply(self, backups):
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

    def apply(self, jobs):
        if not self.is_valid():
            return jobs
        for name in ("source", "kind", "status"):
            if self.cleaned_data[name]:
                jobs = jobs.filter(**{name: self.cleaned_data[name]})
        return jobs
