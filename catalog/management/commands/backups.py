"""Lists backups from the shell, newest first (as django-dbbackup's
`listbackups` does): what exists, whether it is kept, whether it was pruned."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from django.utils import timezone

from catalog.api.serialize import backup_fields
from catalog.models import Backup, Source
from catalog.text import size_text

COLUMNS = ["ID", "SOURCE", "PLAN", "STATUS", "STARTED", "SIZE", "LABEL", "KEPT", "PRUNED"]


class Command(BaseCommand):
    help = "Lists backups, newest first: id, source, plan, status, start, stored size, label, pin or hold, pruning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", help="only this source's backups (its name, slug or id)")
        parser.add_argument("--json", action="store_true", help="print them as JSON, as the API lists them")

    def handle(self, *args: Any, **options: Any) -> None:
        backups = Backup.objects.for_rows().order_by("-created_at", "-pk")
        if options["source"]:
            backups = backups.filter(source=find_source(options["source"]))
        if options["json"]:
            self.stdout.write(json.dumps([backup_fields(b) for b in backups], cls=DjangoJSONEncoder, indent=2))
            return
        rows = [COLUMNS] + [row(backup) for backup in backups]
        if len(rows) == 1:
            self.stdout.write("No backups yet.")
            return
        widths = [max(len(cells[i]) for cells in rows) for i in range(len(COLUMNS))]
        for cells in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())


def find_source(name: str) -> Source:
    lookup = Q(name=name) | Q(slug=name) | (Q(pk=int(name)) if name.isdecimal() else Q(pk__in=[]))
    source = Source.objects.filter(lookup).first()
    if source is None:
        names = ", ".join(Source.objects.order_by("name").values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No source named {name!r}. Sources: {names}.")
    return source


def row(backup: Backup) -> list[str]:
    started = backup.started_at or backup.created_at
    kept = "legal hold" if backup.legal_hold else "pinned" if backup.pinned else "-"
    return [
        str(backup.pk),
        backup.source.name,
        backup.plan.name if backup.plan else "-",
        backup.status,
        timezone.localtime(started).strftime("%Y-%m-%d %H:%M"),
        size_text(backup.stored_bytes) if backup.stored_bytes else "-",
        backup.label or "-",
        kept,
        timezone.localtime(backup.pruned_at).strftime("%Y-%m-%d %H:%M") if backup.pruned_at else "-",
    ]
