"""Configuration as code: sources, destinations, restore servers, alert
channels and plans as one YAML or JSON file (manage.py export_config), read
back by manage.py import_config, so that a setup can be reviewed, versioned
and made again on a fresh host.

- Objects are keyed by their name, unique in every one of these models, and
  refer to each other by name: a plan names its source and destinations.
- The fields are those the pages' forms expose, each kind's own (a local
  destination has no bucket), in the forms' order; no ids, times or state.
- No secret is written. Each stored secret becomes a reference,
  {env: VARIABLE} or {file: /path}, which the import resolves.
- An import checks the whole file first, then runs every object through the
  form its page uses (the same rules and messages) and the same save service
  (audited, the plan's schedule kept in sync), all in one transaction: one
  error anywhere applies nothing, and a dry run is an import rolled back. An
  object whose values are already those of the file is not saved at all, so
  a second import changes nothing and writes no audit event.
- A field the file leaves out keeps its stored value (a new object gets the
  default), as a secret left blank on a form does. An object the file leaves
  out is left alone unless pruning is asked for; so is a section it leaves out.
"""

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django import forms
from django.db import models, transaction
from django.utils.datastructures import MultiValueDict

from catalog import audit, retention, services
from catalog.alerts import notify
from catalog.alerts.forms import SECRET_FIELDS as CHANNEL_SECRET_FIELDS
from catalog.alerts.forms import ChannelForm
from catalog.alerts.models import Channel
from catalog.engine.files import create_private_file
from catalog.errors import Refused
from catalog.forms import DestinationForm, PlanForm, RestoreServerForm, SourceForm
from catalog.models import (
    DIRECTORY_FORMAT,
    TABLE_CHOICE_FORMATS,
    BackupPlan,
    Destination,
    RestoreServer,
    SealedSecrets,
    Source,
)

FORMAT_VERSION = 1
ENV_PREFIX = "STRONGROOM_SECRET"

# The fields each choice shows, as the pages show them (static/js/strongroom.js):
# {selector field: {its value: the fields shown}}. A field no group names is
# every object's.
SOURCE_GROUPS = {
    "engine": {
        "postgresql": ("host", "port", "dbname", "user", "password", "dsn", "sslmode"),
        "mariadb": ("host", "port", "dbname", "user", "password", "sslmode"),
        "sqlite": ("sqlite_path",),
    }
}
DESTINATION_GROUPS = {
    "kind": {
        Destination.LOCAL: ("path", "host"),
        Destination.S3: (
            "bucket",
            "prefix",
            "endpoint_url",
            "region",
            "access_key_id",
            "secret_access_key",
            "immutable_days",
            "lock_mode",
        ),
        Destination.AZURE: ("account_name", "bucket", "prefix", "endpoint_url", "account_key", "sas_token"),
        Destination.GCS: ("bucket", "prefix", "endpoint_url", "service_account_json"),
        Destination.SFTP: (
            "server",
            "server_port",
            "username",
            "password",
            "private_key",
            "private_key_passphrase",
            "path",
        ),
    }
}
CHANNEL_GROUPS = {
    "kind": {
        Channel.EMAIL: ("email_to",),
        Channel.SLACK: ("slack_url",),
        Channel.WEBHOOK: ("url", "webhook_secret"),
        Channel.PAGERDUTY: ("routing_key",),
        Channel.APPRISE: ("apprise_url",),
    }
}
TABLE_CHOICE = ("export_tables", "export_sets")
PLAN_GROUPS = {
    "format": {**{fmt: TABLE_CHOICE for fmt in TABLE_CHOICE_FORMATS}, DIRECTORY_FORMAT: ("dump_jobs",)},
    "retention_mode": {
        retention.GFS: ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"),
        retention.LAST: ("keep_last",),
        retention.DAYS: ("keep_days",),
    },
}


class ConfigError(Exception):
    """What is wrong with a file, every problem in words; nothing was applied."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Section:
    """One kind of object in the file, with the form and services its pages use."""

    key: str  # the file's key: "sources"
    label: str  # in messages: "Source"
    model: type[models.Model]
    form: type[forms.ModelForm]
    fields: tuple[str, ...]  # the form's configuration fields, secrets included, in its order
    secrets: Mapping[str, str]  # form field of a secret → its name in the object's sealed secrets
    groups: Mapping[str, Mapping[str, tuple[str, ...]]]
    save: Callable[[audit.Actor, Any, list[str], dict[str, str], forms.ModelForm], object]
    delete: Callable[[audit.Actor, Any], object]

    def relevant(self, values: Mapping[str, Any]) -> list[str]:
        """The fields an object with these values shows, in the form's order."""
        shown = []
        for name in self.fields:
            hidden = any(
                name in {f for group in groups.values() for f in group} and name not in groups.get(values[selector], ())
                for selector, groups in self.groups.items()
            )
            if not hidden:
                shown.append(name)
        return shown

    def plain_fields(self) -> list[str]:
        return [name for name in self.fields if name not in self.secrets]


def form_fields(form: type[forms.ModelForm], leave_out: Iterable[str] = ()) -> tuple[str, ...]:
    return tuple(name for name in form._meta.fields or () if name not in leave_out)


SECTIONS = (
    Section(
        "sources",
        "Source",
        Source,
        SourceForm,
        form_fields(SourceForm),
        {"password": "password", "dsn": "dsn"},
        SOURCE_GROUPS,
        lambda actor, obj, changed, secrets, form: services.save_source(
            actor, obj, changed_fields=changed, secrets=secrets
        ),
        services.delete_source,
    ),
    Section(
        "destinations",
        "Destination",
        Destination,
        DestinationForm,
        form_fields(DestinationForm),
        {name: name for name in DestinationForm.secret_names()},
        DESTINATION_GROUPS,
        lambda actor, obj, changed, secrets, form: services.save_destination(
            actor, obj, changed_fields=changed, secrets=secrets
        ),
        services.delete_destination,
    ),
    Section(
        "restore_servers",
        "Restore server",
        RestoreServer,
        RestoreServerForm,
        form_fields(RestoreServerForm),
        {"password": "password"},
        {},
        lambda actor, obj, changed, secrets, form: services.save_restore_server(
            actor, obj, changed_fields=changed, secrets=secrets
        ),
        services.delete_restore_server,
    ),
    Section(
        "channels",
        "Channel",
        Channel,
        ChannelForm,
        form_fields(ChannelForm, leave_out=["new_webhook_secret"]),
        {field: name for names in CHANNEL_SECRET_FIELDS.values() for field, name in names.items()},
        CHANNEL_GROUPS,
        lambda actor, obj, changed, secrets, form: notify.save_channel(
            actor, obj, changed_fields=changed, secrets=secrets
        ),
        notify.delete_channel,
    ),
    Section(
        "plans",
        "Plan",
        BackupPlan,
        PlanForm,
        (*form_fields(PlanForm), *TABLE_CHOICE),
        {},
        PLAN_GROUPS,
        lambda actor, obj, changed, secrets, form: services.save_plan(
            actor, obj, changed_fields=changed, destinations=form.cleaned_data["destinations"]
        ),
        services.delete_plan,
    ),
)
SECTION_BY_KEY = {section.key: section for section in SECTIONS}


def snapshot(section: Section, obj: Any) -> dict[str, Any]:
    """The object's configuration as the file writes it: other objects by
    name, a channel's events in the form's order."""
    values = {}
    for name in section.plain_fields():
        if name == "source":
            value: Any = obj.source.name if obj.source_id else None
        elif name == "destinations":
            value = sorted(d.name for d in obj.destinations.all()) if obj.pk else []
        elif name == "events":
            order = [event for event, _ in Channel.EVENT_CHOICES]
            value = sorted(obj.events, key=lambda event: order.index(event) if event in order else len(order))
        else:
            value = getattr(obj, name)
        values[name] = value
    return values


def stored_secrets(obj: models.Model) -> dict[str, str]:
    """A saved object's sealed secrets (a plan has none)."""
    return obj.secrets() if isinstance(obj, SealedSecrets) and obj.pk else {}


# --- export --------------------------------------------------------------------


def export_config(secret_files: str | None = None) -> dict[str, Any]:
    """Every object of every section, ordered by name. Secrets are references:
    a suggested environment variable each, or with `secret_files` a file in
    that folder."""
    config: dict[str, Any] = {"version": FORMAT_VERSION}
    taken: set[str] = set()
    for section in SECTIONS:
        entries = []
        # Sorted here, not by the database, whose collation differs between SQLite and PostgreSQL hosts.
        objects: list[Any] = list(section.model._default_manager.all())
        for obj in sorted(objects, key=lambda obj: obj.name):
            values, stored = snapshot(section, obj), stored_secrets(obj)
            entry: dict[str, Any] = {}
            for name in section.relevant(values):
                if name not in section.secrets:
                    entry[name] = values[name]
                elif stored.get(section.secrets[name]):
                    entry[name] = secret_reference(section, obj.name, name, taken, secret_files)
            entries.append(entry)
        config[section.key] = entries
    return config


def secret_reference(section: Section, name: str, field: str, taken: set[str], folder: str | None) -> dict[str, str]:
    """{env: STRONGROOM_SECRET_SOURCE_ORDERS_DB_PASSWORD}, or {file: <folder>/source-orders-db-password};
    a second object whose name reads the same gets _2."""
    words = f"{section.label}_{name}_{field}"
    variable = ENV_PREFIX + "_" + re.sub(r"[^A-Z0-9]+", "_", words.upper()).strip("_")
    unique, counter = variable, 2
    while unique in taken:
        unique, counter = f"{variable}_{counter}", counter + 1
    taken.add(unique)
    if folder is None:
        return {"env": unique}
    file_name = unique.removeprefix(ENV_PREFIX + "_").lower().replace("_", "-")
    return {"file": str(Path(folder).resolve() / file_name)}


def secret_references(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reference in words, what it is) for each secret a file names: what to set before importing it."""
    found = []
    for section in SECTIONS:
        for entry in config.get(section.key) or ():
            for name in section.secrets:
                ref = entry.get(name)
                if isinstance(ref, Mapping) and len(ref) == 1:
                    ((how, where),) = ref.items()
                    where_words = f"the file {where}" if how == "file" else where
                    found.append((where_words, f"{section.label.lower()} “{entry.get('name')}”, {name}"))
    return found


class ConfigDumper(yaml.SafeDumper):
    """Lists indented under their key, and a secret reference on one line: {env: NAME}."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def represent_dict(self, data: Any) -> yaml.MappingNode:
        reference = isinstance(data, dict) and len(data) == 1 and next(iter(data)) in ("env", "file")
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True if reference else None)


ConfigDumper.add_representer(dict, ConfigDumper.represent_dict)

YAML_HEADER = (
    "# Strongroom configuration (manage.py export_config); manage.py import_config reads it back.\n"
    "# No secret is in this file: each is read at import from the environment variable ({env: ...})\n"
    "# or the file ({file: ...}) named. A field left out keeps its stored value.\n"
)


def dump(config: Mapping[str, Any], fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    body = yaml.dump(config, Dumper=ConfigDumper, sort_keys=False, allow_unicode=True, width=120)
    return YAML_HEADER + body


def write_private(path: str, text: str) -> None:
    """Written under a temporary name 0600 and renamed: the file holds no
    secret, but it maps every database and bucket."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with create_private_file(temporary) as out:
            out.write(text.encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# --- reading a file ----------------------------------------------------------------


class ConfigLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping: plain YAML keeps the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key “{key}” is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(text: str, name: str) -> Any:
    """The file's content; its errors say where, never quoting the line (a
    secret pasted by mistake would be printed)."""
    if name.endswith(".json") or text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=no_repeated_keys)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                [f"{name} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}."]
            ) from None
        except ValueError as exc:
            raise ConfigError([f"{name}: {exc}."]) from None
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 — a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{name} is not valid YAML: {where}{exc.problem}."]) from None
    except yaml.YAMLError:
        raise ConfigError([f"{name} is not valid YAML."]) from None


def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if repeated := sorted({key for key in keys if keys.count(key) > 1}):
        raise ValueError(f"the key “{repeated[0]}” is given twice")
    return dict(pairs)


@dataclass
class Entry:
    """One object of the file, checked: its plain fields and its secrets resolved."""

    name: str
    fields: dict[str, Any]
    secrets: dict[str, str]


def read_entries(config: Any, environ: Mapping[str, str]) -> tuple[dict[str, list[Entry]], list[str]]:
    """{section key: entries} of the sections the file has, and every problem
    with the file's shape, types and secret references."""
    if not isinstance(config, Mapping):
        return {}, ["The file must hold a mapping with version: 1 and the sections."]
    problems = []
    if config.get("version") != FORMAT_VERSION:
        problems.append(f"The file must say version: {FORMAT_VERSION} (the format export_config writes).")
    known = ["version", *SECTION_BY_KEY]
    problems += [f"Unknown section “{key}” (known: {', '.join(known)})." for key in config if key not in known]
    entries: dict[str, list[Entry]] = {}
    for section in SECTIONS:
        if section.key not in config:
            continue
        items = config[section.key] or []
        if not isinstance(items, list):
            problems.append(f"{section.key} must be a list of objects, each with its name.")
            continue
        entries[section.key] = []
        for position, item in enumerate(items, 1):
            entry = read_entry(section, position, item, environ, problems)
            if entry is None:
                continue
            if any(other.name == entry.name for other in entries[section.key]):
                problems.append(f"{section.label} “{entry.name}” is in the file twice.")
                continue
            entries[section.key].append(entry)
    return entries, problems


def read_entry(
    section: Section, position: int, item: Any, environ: Mapping[str, str], problems: list[str]
) -> Entry | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"].strip():
        problems.append(f"{section.key}, object {position}: give each object its name (text).")
        return None
    entry, before = Entry(item["name"], {}, {}), len(problems)
    where = f"{section.label} “{entry.name}”"
    for key, value in item.items():
        if key in section.secrets:
            secret, problem = resolve_secret(value, environ)
            if problem:
                problems.append(f"{where}, {key}: {problem}")
            else:
                entry.secrets[key] = secret
        elif key not in section.fields:
            problems.append(f"{where}: unknown field “{key}” (known: {', '.join(section.fields)}).")
        elif problem := type_problem(section, key, value):
            problems.append(f"{where}, {key}: {problem}")
        else:
            entry.fields[key] = value
    return entry if len(problems) == before else None


def resolve_secret(reference: Any, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(value, problem): the secret a reference names. A problem names the
    variable or file, never a value."""
    refused = "give it as {env: VARIABLE} or {file: /path}; the file never holds a secret itself."
    if not isinstance(reference, Mapping) or len(reference) != 1:
        return "", refused
    ((how, where),) = reference.items()
    if how not in ("env", "file") or not isinstance(where, str) or not where:
        return "", refused
    if how == "env":
        if where not in environ:
            return "", f"the environment variable {where} is not set."
        value = environ[where]
    else:
        try:
            # Stripped as *_FILE settings are (backupsite/envconfig.py): files end with a newline.
            value = Path(where).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            return "", f"the file {where} cannot be read: {getattr(exc, 'strerror', None) or 'not text'}."
    if not value:
        return "", f"{'the environment variable' if how == 'env' else 'the file'} {where} is empty."
    return value, None


def type_problem(section: Section, name: str, value: Any) -> str | None:
    """What is wrong with a value's type, in words; the value itself is not repeated."""
    if name == "source":
        return None if isinstance(value, str) else "give the source's name."
    if name in ("destinations", "events"):
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        return None if ok else "give a list of names."
    if name in TABLE_CHOICE:
        keys = ("schema", "name") if name == "export_tables" else ("label", "pattern")
        ok = isinstance(value, list) and all(
            isinstance(item, Mapping) and all(isinstance(item.get(key), str) for key in keys) for item in value
        )
        return None if ok else f"give a list of mappings, each with {' and '.join(keys)}."
    model_field = section.model._meta.get_field(name)
    if value is None and model_field.null:
        return None
    if isinstance(model_field, models.BooleanField):
        return None if isinstance(value, bool) else "give true or false."
    if isinstance(model_field, models.IntegerField):
        return None if isinstance(value, int) and not isinstance(value, bool) else "give a whole number."
    if isinstance(value, str):
        return None
    hint = " (YAML reads yes, no, on and off as true or false: quote them)" if isinstance(value, bool) else ""
    return f"give text{hint}."


# --- import ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an import did, or a dry run would do, to one object."""

    section: Section
    name: str
    action: str  # CREATE, UPDATE, UNCHANGED, ABSENT or DELETE
    lines: list[str] = field(default_factory=list)


CREATE, UPDATE, UNCHANGED, ABSENT, DELETE = "create", "update", "unchanged", "absent", "delete"


@dataclass
class Report:
    outcomes: list[Outcome]
    applied: bool

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)


def import_config(
    config: Any,
    actor: audit.Actor,
    *,
    dry_run: bool = False,
    prune: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Report:
    """Creates and updates the file's objects, and with `prune` deletes those
    it leaves out, all or nothing; raises ConfigError with every problem."""
    entries, problems = read_entries(config, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems)
    outcomes: list[Outcome] = []
    with transaction.atomic():
        for section in SECTIONS:
            for entry in entries.get(section.key, ()):
                if outcome := apply_entry(section, entry, actor, problems):
                    outcomes.append(outcome)
        for section in reversed(SECTIONS):
            if section.key in entries:
                outcomes += left_out(section, entries, actor, prune, problems)
        if problems or dry_run:
            transaction.set_rollback(True)
    if problems:
        raise ConfigError(problems)
    order = [section.key for section in SECTIONS]
    outcomes.sort(key=lambda outcome: order.index(outcome.section.key))
    return Report(outcomes, applied=not dry_run)


def apply_entry(section: Section, entry: Entry, actor: audit.Actor, problems: list[str]) -> Outcome | None:
    """Runs one object through its form and, when something differs, its save service."""
    where = f"{section.label} “{entry.name}”"
    instance: Any = section.model._default_manager.filter(name=entry.name).first()
    created = instance is None
    instance = instance or section.model(name=entry.name)
    before, stored = snapshot(section, instance), stored_secrets(instance)
    if section.model is Destination and "host" in entry.fields:
        # The form offers the hosts whose workers are alive and the destination's
        # own: a host being set up may have none running yet.
        instance.host = entry.fields["host"]
    data = form_data(section, {**before, **entry.fields}, entry.secrets, where, problems)
    if data is None:
        return None
    form = section.form(data, instance=instance)
    if not form.is_valid():
        problems += form_problems(where, form)
        return None
    after = {**snapshot(section, instance), **plan_references(section, form)}
    relevant = section.relevant(after)
    if misplaced := [name for name in entry.secrets if name not in relevant]:
        problems += [f"{where}, {name}: not a secret this kind of {section.label.lower()} uses." for name in misplaced]
        return None
    if problem := missing_webhook_secret(section, after, entry, before, stored):
        problems.append(f"{where}, webhook_secret: {problem}")
        return None
    changed = [name for name in after if created or after[name] != before[name]]
    secrets = {name: value for name, value in entry.secrets.items() if value != stored.get(section.secrets[name])}
    if not created and not changed and not secrets:
        return Outcome(section, entry.name, UNCHANGED)
    try:
        with transaction.atomic():
            sealed = {section.secrets[name]: value for name, value in secrets.items()}
            section.save(actor, instance, changed, sealed, form)
    except Refused as exc:
        problems.append(f"{where}: {exc}")
        return None
    if created:
        lines = [f"{name}: {shown(after[name])}" for name in relevant if name in after and name != "name"]
        lines += [f"{name}: (set)" for name in entry.secrets]
        return Outcome(section, entry.name, CREATE, lines)
    lines = [f"{name}: {shown(before[name])} → {shown(after[name])}" for name in changed]
    lines += [f"{name}: {'(changed)' if name in secrets else '(unchanged)'}" for name in entry.secrets]
    return Outcome(section, entry.name, UPDATE, lines)


def form_data(
    section: Section, values: Mapping[str, Any], secrets: Mapping[str, str], where: str, problems: list[str]
) -> MultiValueDict[str, Any] | None:
    """What the page would post: other objects by id, a plan's chosen tables
    as the table picker's inputs (catalog/exports.py), secrets in their fields."""
    data: MultiValueDict[str, Any] = MultiValueDict()
    unknown = []
    for name, value in values.items():
        if value is None:
            continue  # an empty input
        if name == "source":
            source = Source.objects.filter(name=value).first()
            unknown += (
                [f"{where}, source: there is no source “{value}” here, nor one from the file that could be saved."]
                if not source
                else []
            )
            data[name] = source.pk if source else ""
        elif name == "destinations":
            found = dict(Destination.objects.filter(name__in=value).values_list("name", "pk"))
            unknown += [
                f"{where}, destinations: there is no destination “{missing}” here, "
                "nor one from the file that could be saved."
                for missing in value
                if missing not in found
            ]
            data.setlist(name, [found[each] for each in value if each in found])
        elif name == "export_tables":
            data.setlist("export_table", [f"{table['schema']}.{table['name']}" for table in value])
            for table in value:
                data[f"where:{table['schema']}.{table['name']}"] = table.get("where") or ""
        elif name == "export_sets":
            data.setlist("set_label", [named["label"] for named in value])
            data.setlist("set_pattern", [named["pattern"] for named in value])
        elif isinstance(value, list):
            data.setlist(name, value)
        else:
            data[name] = value
    for name, value in secrets.items():
        data[name] = value
    problems += unknown
    return None if unknown else data


def plan_references(section: Section, form: forms.ModelForm) -> dict[str, Any]:
    """A plan's destinations as the form chose them (saved only with the plan)."""
    if section.model is not BackupPlan:
        return {}
    return {"destinations": sorted(d.name for d in form.cleaned_data["destinations"])}


def missing_webhook_secret(
    section: Section, after: Mapping[str, Any], entry: Entry, before: Mapping[str, Any], stored: Mapping[str, str]
) -> str | None:
    """The page generates a webhook's signing secret and shows it once; a file
    names it instead, since its receiver must know it and a command's output
    may be kept in a log."""
    if section.model is not Channel or after["kind"] != Channel.WEBHOOK or "webhook_secret" in entry.secrets:
        return None
    if before["kind"] == Channel.WEBHOOK and stored.get("secret"):
        return None
    return "give it as {env: VARIABLE} or {file: /path}: the receiver checks each message's signature with it."


def form_problems(where: str, form: forms.BaseForm) -> list[str]:
    return [
        f"{where}{'' if name == '__all__' else ', ' + name}: {message}"
        for name, messages in form.errors.items()
        for message in messages
    ]


def shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def left_out(
    section: Section, entries: Mapping[str, list[Entry]], actor: audit.Actor, prune: bool, problems: list[str]
) -> list[Outcome]:
    """The section's objects the file leaves out: reported, or with `prune` deleted
    by the pages' own delete services (which refuse what the pages refuse)."""
    named = {entry.name for entry in entries[section.key]}
    used = referenced_by_plans(section, entries.get("plans", ()))
    outcomes = []
    obj: Any
    for obj in section.model._default_manager.exclude(name__in=named).order_by("name"):
        if not prune:
            outcomes.append(Outcome(section, obj.name, ABSENT))
            continue
        where = f"{section.label} “{obj.name}”"
        if obj.name in used:
            problems.append(f"{where} is not in the file, but plan “{used[obj.name]}” in the file uses it.")
            continue
        # A source goes with its plans, as on its page.
        plans = obj.plans.values_list("name", flat=True) if section.model is Source else ()
        lines = [f"its plan “{plan}” goes with it" for plan in plans]
        try:
            with transaction.atomic():
                section.delete(actor, obj)
        except Refused as exc:
            problems.append(f"{where}: {exc}")
            continue
        outcomes.append(Outcome(section, obj.name, DELETE, lines))
    return outcomes


def referenced_by_plans(section: Section, plans: Iterable[Entry]) -> dict[str, str]:
    """{name of a source or destination: a plan of the file that names it}."""
    used: dict[str, str] = {}
    for plan in plans:
        if section.model is Source and isinstance(plan.fields.get("source"), str):
            used.setdefault(plan.fields["source"], plan.name)
        if section.model is Destination:
            for name in plan.fields.get("destinations") or ():
                used.setdefault(name, plan.name)
    return used
