"""Seals every live master key in the metadata database under this host's
key-encryption key (and AWS KMS key), so that every host can use it: moves
key files into the database, and re-seals keys sealed under a previous KEK.
Safe to run again (catalog/keystore.py)."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import keystore
from catalog.engine import keyseal
from catalog.errors import Refused

ACTOR = "seal_keys command"


class Command(BaseCommand):
    help = (
        "Seals every live master key in the metadata database under STRONGROOM_KEK (and STRONGROOM_KMS_KEY_ID): "
        "from its key file in the key directory, or from its sealed copy under a previous KEK "
        "(STRONGROOM_KEK_PREVIOUS or --previous-kek-file). Keys already sealed so are left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--remove-files",
            action="store_true",
            help="delete each key file once its sealed copy in the database opens to the same key",
        )
        parser.add_argument(
            "--previous-kek-file",
            action="append",
            default=[],
            metavar="PATH",
            help="a file holding a previous key-encryption key (base64), to open keys sealed under it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        previous = [read_kek(path) for path in options["previous_kek_file"]]
        try:
            report = keystore.seal_keys(ACTOR, previous_keks=previous, remove_files=options["remove_files"])
        except Refused as exc:
            raise CommandError(str(exc)) from exc
        for line in report.lines:
            self.stdout.write(line)
        self.stdout.write(
            f"Sealed {len(report.sealed)}, already sealed {len(report.unchanged)}, "
            f"files removed {len(report.files_removed)}, left as they were {len(report.problems)}."
        )
        if report.problems:
            raise CommandError(f"Not sealed: {', '.join(report.problems)} (see above).")


def read_kek(path: str) -> bytes:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"--previous-kek-file {path} cannot be read: {exc.strerror}") from exc
    try:
        return keyseal.parse_kek(text, f"--previous-kek-file {path}")
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
