"""Restores a backup non-interactively (for scripted DR drills); exits 1 on failure."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import Backup, RestoreServer
from catalog.services import Refused
from restore import services
from restore.models import RestoreJob

ACTOR = "restore command"


class Command(BaseCommand):
    help = "Restores a backup into a new database, or previews/merges/replaces it into the source's database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backup", type=int, required=True)
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--new-database", metavar="NAME", help="restore into a new database of this name")
        where.add_argument("--into-source", action="store_true", help="restore into the source's own database")
        parser.add_argument(
            "--server", metavar="NAME", help="a new database on this registered restore server, not on the source's"
        )
        parser.add_argument("--tables", default="", help="comma-separated schema.table names (default: everything)")
        parser.add_argument("--mode", choices=[m for m, _ in RestoreJob.MODE_CHOICES], default=RestoreJob.FULL)
        parser.add_argument(
            "--confirm", default="", metavar="NAME", help="the target database's name, to confirm a change"
        )
        parser.add_argument(
            "--terminate-connections",
            action="store_true",
            help="a whole-database replace ends the sessions still open on the database",
        )
        parser.add_argument(
            "--without-owners",
            action="store_true",
            help="objects belong to the restoring role, with no grants; for MariaDB/MySQL, views, triggers, "
            "routines and events are defined by the restoring user (default: as in the backup)",
        )
        parser.add_argument(
            "--create-missing-roles",
            action="store_true",
            help="create the roles the target server lacks from the backup's globals first "
            "(no password, never superuser); without it a restore with owners refuses",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        backup = Backup.objects.filter(pk=options["backup"]).select_related("source").first()
        if backup is None:
            raise CommandError(f"No backup #{options['backup']}.")
        tables = [t.strip() for t in options["tables"].split(",") if t.strip()]
        target = RestoreJob.NEW if options["new_database"] else RestoreJob.EXISTING
        database = options["new_database"] or services.existing_database(backup.source)
        restore_server = registered_server(options["server"])
        try:
            job = services.request_restore(
                ACTOR,
                backup,
                target=target,
                database=database,
                tables=tables,
                mode=options["mode"],
                confirmed_name=options["confirm"],
                terminate_connections=options["terminate_connections"],
                without_owners=options["without_owners"],
                create_missing_roles=options["create_missing_roles"],
                restore_server=restore_server,
                enqueue=False,
            )
        except Refused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(job.describe())
        # None when it was cancelled before this could claim it: then say so, as it now stands.
        job = services.run_restore(job.pk) or RestoreJob.objects.get(pk=job.pk)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "restore": job.pk,
                        "status": job.status,
                        "summary": job.summary,
                        "steps": job.steps,
                        "report": job.report,
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            for step in job.steps:
                self.stdout.write(
                    f"  {step['name']}: {step['status']} in {step.get('seconds', 0)} s — {step.get('detail', '')}"
                )
            self.stdout.write(f"{job.status}: {job.summary}")
        if job.status != RestoreJob.SUCCEEDED:
            raise CommandError(f"Restore #{job.pk} {job.status}.")


def registered_server(name: str | None) -> RestoreServer | None:
    """The RestoreServer named on the command line (None without --server)."""
    if name is None:
        return None
    server = RestoreServer.objects.filter(name=name).first()
    if server is None:
        names = (
            ", ".join(RestoreServer.objects.values_list("name", flat=True))
            or "none yet (administrators register them on the Servers page)"
        )
        raise CommandError(f"No restore server named {name!r}. Registered servers: {names}.")
    return server
