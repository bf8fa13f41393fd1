"""Imports a dump made elsewhere as a backup of a source, from the shell:
`manage.py import_dump orders.dump --source "Orders DB" [--plan Nightly]
[--label from-old-host]`. The file is checked (its format by its bytes, its
engine against the source's, read to its end), then stored through the plan
here, in this process, like a backup (catalog/imports.py). The file itself
is only read: it stays where it is."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import imports, tasks
from catalog.errors import Refused
from catalog.forms import RunBackupForm
from catalog.models import Backup, BackupPlan, Source
from catalog.text import size_text

ACTOR = "import_dump command"


class Command(BaseCommand):
    help = (
        "Imports a dump made elsewhere (pg_dump custom, tar or directory as a tar archive, plain SQL from pg_dump "
        "or mariadb-dump, a SQLite file; gzip or zstd or not) as a backup of a source, stored through its plan; "
        "exits non-zero unless it is stored in every destination."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the dump file on this host (only read; it stays where it is)")
        parser.add_argument("--source", required=True, help="the source's name (or id)")
        parser.add_argument("--plan", default="", help="the plan's name (or id); default: the source's one plan")
        parser.add_argument("--label", default="", help="a label such as from-old-host: letters, digits, - and _")

    def handle(self, *args: Any, **options: Any) -> None:
        source = find_source(options["source"])
        plan = find_source_plan(source, options["plan"]) if options["plan"] else None
        form = RunBackupForm({"label": options["label"]})
        if not form.is_valid():
            raise CommandError(
                f"The label {options['label']!r} may use letters, digits, - and _ only, up to 100 characters."
            )
        path = options["file"]
        try:
            staging = imports.stage_local_file(path)
            backup = imports.import_dump(
                ACTOR,
                staging,
                source,
                plan,
                label=form.cleaned_data["label"],
                imported_from=f"file {staging.joinpath(imports.INPUT).readlink()}",
                enqueue=False,
            )
        except Refused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Checked {path}: {backup.imported_format}. Storing it as backup #{backup.pk}…")
        tasks.run_backup(backup.pk)  # here, as a worker would: then the plan's checksum and retention
        backup.refresh_from_db()
        if backup.status != Backup.SUCCEEDED:
            raise CommandError(f"Backup #{backup.pk} {backup.status}: {backup.error or 'no error was recorded'}")
        copies = backup.copies.filter(status="durable").count()
        self.stdout.write(
            f"Imported as backup #{backup.pk} of {source} (plan {backup.plan}): {size_text(backup.stored_bytes)} "
            f"stored in {copies} destination{'s' if copies != 1 else ''}."
        )


def find_source(name: str) -> Source:
    source = Source.objects.filter(name=name).first()
    if source is None and name.isdecimal():
        source = Source.objects.filter(pk=int(name)).first()
    if source is None:
        names = ", ".join(Source.objects.order_by("name").values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No source named {name!r}. Sources: {names}.")
    return source


def find_source_plan(source: Source, name: str) -> BackupPlan:
    plan = source.plans.filter(name=name).first()
    if plan is None and name.isdecimal():
        plan = source.plans.filter(pk=int(name)).first()
    if plan is None:
        names = ", ".join(plan.name for plan in imports.importing_plans(source)) or "none yet"
        raise CommandError(f"{source} has no plan named {name!r}. Its plans that can take a dump: {names}.")
    return plan
