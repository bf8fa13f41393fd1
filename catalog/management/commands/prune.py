"""Applies retention from the command line, or shows what it would do."""

import json
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import lifecycle
from catalog.models import BackupPlan

ACTOR = "prune command"


class Command(BaseCommand):
    help = "Applies each plan's retention rule: deletes the backups it does not keep (see --dry-run)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", action="append", default=[], help="a plan's name or id (repeatable; default all)")
        parser.add_argument("--dry-run", action="store_true", help="only show what would be kept and pruned")
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        plans = self.plans(options["plan"])
        if options["dry_run"]:
            self.dry_run(plans, options["json"])
            return
        # One plan that cannot be pruned does not stop the others (and opens an alert).
        reports = {plan: lifecycle.prune_plan_checked(ACTOR, plan) for plan in plans}
        if options["json"]:
            self.print_json({plan.name: report_as_json(report) for plan, report in reports.items()})
        else:
            for plan, report in reports.items():
                self.stdout.write(f"{plan.name}: {report.summary()}")
                for backup_id, detail in report.errors:
                    self.stderr.write(f"  backup #{backup_id}: {detail}")
        if any(report.failure for report in reports.values()):
            failed = [plan.name for plan, report in reports.items() if report.failure]
            others = "; the other plans were pruned" if len(failed) < len(reports) else ""
            raise CommandError(f"Retention could not be applied to: {', '.join(failed)}{others}.")
        if any(report.errors for report in reports.values()):
            raise CommandError("Some backups could not be pruned; they stay in the catalog and are retried next time.")

    def dry_run(self, plans: Sequence[BackupPlan], as_json: bool) -> None:
        previews: dict[BackupPlan, list[lifecycle.Row]] = {}
        failures: dict[BackupPlan, str] = {}
        for plan in plans:
            try:
                previews[plan] = lifecycle.preview(plan)
            except Exception as exc:  # one plan's broken rule does not hide the others' previews
                failures[plan] = lifecycle.failure_text(exc)
        if as_json:
            self.print_json(
                {
                    **{plan.name: lifecycle.preview_as_json(rows) for plan, rows in previews.items()},
                    **{plan.name: {"error": text} for plan, text in failures.items()},
                }
            )
        else:
            for plan, rows in previews.items():
                self.print_preview(plan, rows)
            for plan, text in failures.items():
                self.stderr.write(f"{plan.name}: cannot preview: {text}")
        if failures:
            raise CommandError(f"Retention cannot be previewed for: {', '.join(plan.name for plan in failures)}.")

    def plans(self, wanted: Sequence[str]) -> list[BackupPlan]:
        if not wanted:
            return list(BackupPlan.objects.all())
        plans = []
        for name in wanted:
            lookup = {"pk": int(name)} if name.isdigit() else {"name": name}
            plan = BackupPlan.objects.filter(**lookup).first()
            if plan is None:
                raise CommandError(f"No plan named {name!r}.")
            plans.append(plan)
        return plans

    def print_preview(self, plan: BackupPlan, rows: Sequence[lifecycle.Row]) -> None:
        tally = lifecycle.tally(rows)
        self.stdout.write(
            f"{plan.name} ({plan.retention_policy().describe()}): "
            f"{tally['keep']} kept, {tally['prune']} would be pruned, {tally['locked']} locked"
        )
        for row in rows:
            when = row.backup.created_at.astimezone(lifecycle.local_zone()).strftime("%Y-%m-%d %H:%M")
            self.stdout.write(f"  #{row.backup.pk:<6} {when}  {row.outcome():<6}  {row.decision.explain()}")

    def print_json(self, data: object) -> None:
        self.stdout.write(json.dumps(data, indent=2))


def report_as_json(report: lifecycle.PruneReport) -> dict[str, Any]:
    if report.failure:
        return {"error": report.failure}
    return {
        "pruned": [{"backup": pk, "reason": reason} for pk, reason in report.pruned],
        "waiting": [{"backup": pk, "detail": detail} for pk, detail in report.waiting],
        "errors": [{"backup": pk, "detail": detail} for pk, detail in report.errors],
        # Copies in a folder on another host's disk: that host's own queue prunes them.
        "elsewhere": [{"backup": pk, "host": host} for pk, host in report.elsewhere],
        "queued_for": report.queued_for,
    }
