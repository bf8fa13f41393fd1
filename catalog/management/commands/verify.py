"""Verifies backups from the shell; exits non-zero when one fails (for cron or CI)."""

import json
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import services, verification
from catalog.models import Backup, BackupPlan, Source, Verification

ACTOR = "verify command"

Named = TypeVar("Named", BackupPlan, Source)


class Command(BaseCommand):
    help = "Checksums and/or test-restores a backup (by default the latest good one of every plan)."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--backup", type=int, help="a backup's id")
        which.add_argument("--plan", help="the latest good backup of this plan (name or id)")
        which.add_argument("--source", help="the latest good backup of this source (name or id)")
        parser.add_argument("--kind", choices=["checksum", "restore", "both"], default="both")
        parser.add_argument("--json", action="store_true", help="print the results with their evidence as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        backups = self.backups(options)
        kinds = ["checksum", "restore"] if options["kind"] == "both" else [options["kind"]]
        results: list[Verification] = []
        for backup in backups:
            for kind in kinds:
                try:
                    job = verification.create_verification(ACTOR, backup, kind, trigger="command", enqueue_it=False)
                except services.Refused as exc:
                    raise CommandError(f"Backup #{backup.pk}: {exc}") from exc
                job = verification.run_here(job)
                results.append(job)
                if not options["json"]:
                    self.stdout.write(
                        f"Backup #{backup.pk} {job.get_kind_display().lower()}: {job.status} — {job.summary}"
                    )
        if options["json"]:
            self.stdout.write(json.dumps([as_json(job) for job in results], indent=2))
        failed = [job for job in results if job.status != Verification.PASSED]
        if failed:
            raise CommandError(f"{len(failed)} of {len(results)} verifications did not pass.")

    def backups(self, options: dict[str, Any]) -> list[Backup]:
        if options["backup"]:
            backup = Backup.objects.filter(pk=options["backup"]).first()
            if backup is None:
                raise CommandError(f"No backup #{options['backup']}.")
            return [backup]
        if options["plan"]:
            plans = [self.lookup(BackupPlan, options["plan"])]
        elif options["source"]:
            plans = list(self.lookup(Source, options["source"]).plans.all())
        else:
            plans = list(BackupPlan.objects.all())
        latest = [p.stored_backups().filter(status=Backup.SUCCEEDED).order_by("-created_at").first() for p in plans]
        backups = [b for b in latest if b is not None]
        if not backups:
            raise CommandError("There is no good backup to verify.")
        return backups

    def lookup(self, model: type[Named], name: str) -> Named:
        found = model.objects.filter(**({"pk": int(name)} if name.isdigit() else {"name": name})).first()
        if found is None:
            raise CommandError(f"No {model._meta.verbose_name} named {name!r}.")
        return found


def as_json(job: Verification) -> dict[str, Any]:
    return {
        "verification": job.pk,
        "backup": job.backup_id,
        "kind": job.kind,
        "status": job.status,
        "summary": job.summary,
        "restore_seconds": job.restore_seconds,
        "evidence": job.evidence,
    }
