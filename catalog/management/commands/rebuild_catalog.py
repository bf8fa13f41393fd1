"""Imports backups from their manifests: the way back after losing the catalog."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import rebuild
from catalog.models import Destination

ACTOR = "rebuild_catalog command"


class Command(BaseCommand):
    help = (
        "Reads every manifest in the destinations, checks its signature with the master keys in the key "
        "directory, adds the backups the catalog does not know and gives them their plans (a missing plan is "
        "made again, paused, from its newest manifest). Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--destination", action="append", default=[], help="a destination's name (default all)")

    def handle(self, *args: Any, **options: Any) -> None:
        destinations = list(Destination.objects.all())
        if options["destination"]:
            destinations = [d for d in destinations if d.name in options["destination"]]
            unknown = set(options["destination"]) - {d.name for d in destinations}
            if unknown:
                raise CommandError(f"No destination named {', '.join(sorted(unknown))}. Add it in the web UI first.")
        if not destinations:
            raise CommandError("There are no destinations to read. Add the old ones (same directory or bucket) first.")
        result = rebuild.rebuild(ACTOR, destinations)
        for destination, report in result.imports:
            self.stdout.write(f"{destination.name}: {report.summary()}")
            for key, reason in report.refused:
                self.stderr.write(f"  refused {key}: {reason}")
            for key, note in report.notes:
                self.stderr.write(f"  imported without {key}: {note}")
        for line in result.lines():
            self.stdout.write(line)
