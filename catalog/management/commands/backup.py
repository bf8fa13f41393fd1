"""Backs up a plan from the shell, as its page's "Back up now" does: for
cron, CI and deploy scripts (`manage.py backup --plan Nightly --label
pre-migration --wait`), as users of django-dbbackup's `dbbackup` expect."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from catalog import backup_runs, services, tasks
from catalog.api.serialize import backup_fields, copy_detail
from catalog.forms import RunBackupForm
from catalog.models import Backup, BackupPlan
from catalog.templatetags.strongroom import duration
from catalog.text import size_text

ACTOR = "backup command"


class Command(BaseCommand):
    help = (
        "Queues a backup of a plan for the workers, as its page's Back up now does; with --wait, runs it here "
        "and exits non-zero unless it succeeded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, help="the plan's name (or id)")
        parser.add_argument("--label", default="", help="a label such as pre-migration: letters, digits, - and _")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="run the backup in this process and wait for its outcome (no worker needed)",
        )
        parser.add_argument("--json", action="store_true", help="print the backup as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = find_plan(options["plan"])
        form = RunBackupForm({"label": options["label"]})
        if not form.is_valid():
            raise CommandError(
                f"The label {options['label']!r} may use letters, digits, - and _ only, up to 100 characters."
            )
        label = form.cleaned_data["label"]
        try:
            if options["wait"]:
                # Not queued: it runs here, so no worker can take it as well.
                backup = backup_runs.create_backup(ACTOR, plan, label=label)
            else:
                backup = backup_runs.start_backup(ACTOR, plan, label=label)
        except services.Refused as exc:
            raise CommandError(str(exc)) from exc
        if options["wait"]:
            if not options["json"]:
                self.stdout.write(f"Backing up plan {plan.name} as backup #{backup.pk}…")
            tasks.run_backup(backup.pk)  # as a worker would: then the plan's checksum and retention
        backup = Backup.objects.select_related("source", "plan").get(pk=backup.pk)
        if options["json"]:
            copies = [copy_detail(copy) for copy in backup.copies.select_related("destination")]
            self.stdout.write(json.dumps({**backup_fields(backup), "copies": copies}, cls=DjangoJSONEncoder, indent=2))
        else:
            self.stdout.write(outcome_text(backup))
        if options["wait"] and backup.status != Backup.SUCCEEDED:
            raise CommandError(f"Backup #{backup.pk} {backup.status}: {backup.error or 'no error was recorded'}")


def find_plan(name: str) -> BackupPlan:
    plan = BackupPlan.objects.select_related("source").filter(name=name).first()
    if plan is None and name.isdecimal():
        plan = BackupPlan.objects.select_related("source").filter(pk=int(name)).first()
    if plan is None:
        names = ", ".join(BackupPlan.objects.order_by("name").values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No plan named {name!r}. Plans: {names}.")
    return plan


def outcome_text(backup: Backup) -> str:
    assert backup.plan is not None  # the command backs up a plan
    label = f" ({backup.label})" if backup.label else ""
    if backup.status == Backup.QUEUED:
        return (
            f"Queued backup #{backup.pk}{label} of plan {backup.plan.name}; a worker runs it "
            f"(follow it with: manage.py backups --source {backup.source.slug})."
        )
    if backup.status == Backup.SUCCEEDED:
        copies = backup.copies.filter(status="durable").count()
        return (
            f"Backup #{backup.pk}{label} of plan {backup.plan.name} succeeded in {duration(backup.duration())}: "
            f"{size_text(backup.stored_bytes)} stored in {copies} destination{'s' if copies != 1 else ''}."
        )
    return f"Backup #{backup.pk}{label} of plan {backup.plan.name}: {backup.status}."
