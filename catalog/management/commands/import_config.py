"""Creates and updates the configuration a file of export_config describes,
all or nothing: catalog/config_as_code.py."""

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import config_as_code
from catalog.config_as_code import ABSENT, CREATE, DELETE, UNCHANGED, UPDATE

ACTOR = "manage.py import_config"

# What each outcome is called, once done and in a dry run; then in the summary.
SAID = {
    CREATE: ("created", "would be created"),
    UPDATE: ("changed", "would change"),
    UNCHANGED: ("unchanged", "unchanged"),
    ABSENT: ("not in the file: left alone", "not in the file: left alone"),
    DELETE: ("not in the file: deleted", "not in the file: would be deleted"),
}
COUNTED = {
    CREATE: ("created", "to create"),
    UPDATE: ("changed", "to change"),
    DELETE: ("deleted", "to delete"),
    UNCHANGED: ("unchanged", "unchanged"),
    ABSENT: ("left alone (not in the file)", "left alone (not in the file)"),
}


class Command(BaseCommand):
    help = (
        "Creates and updates sources, destinations, restore servers, alert channels and plans from a file "
        "export_config wrote, through the same checks as the pages, all or nothing. Secrets are read from the "
        "environment variables or files the file names. Objects the file leaves out are left alone unless --prune."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the YAML or JSON file (- reads standard input)")
        parser.add_argument("--dry-run", action="store_true", help="say what would change, and change nothing")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="delete the objects of the file's sections that it leaves out (refused as on their pages, "
            "e.g. a source with backups)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["file"]
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            config = config_as_code.load(text, name)
            report = config_as_code.import_config(config, ACTOR, dry_run=options["dry_run"], prune=options["prune"])
        except config_as_code.ConfigError as exc:
            problems = "\n".join(f"- {problem}" for problem in exc.problems)
            raise CommandError(f"Nothing was applied: {len(exc.problems)} problem(s) in {name}.\n{problems}") from None
        said = 1 if options["dry_run"] else 0
        for outcome in report.outcomes:
            self.stdout.write(f"{outcome.section.label} “{outcome.name}”: {SAID[outcome.action][said]}")
            for line in outcome.lines:
                self.stdout.write(f"    {line}")
        counts = ", ".join(
            f"{report.count(action)} {words[said]}" for action, words in COUNTED.items() if report.count(action)
        )
        self.stdout.write(
            f"Dry run, nothing changed: {counts or 'nothing'}." if said else f"Applied: {counts or 'nothing'}."
        )
