"""The restore_command of a point-in-time restore:

    restore_command = '<python> manage.py wal_fetch <source id> %f %p'

Writes WAL file %f of the source, read from Strongroom's stored copies
(checksum verified, decrypted), to %p atomically. Exits 1 when Strongroom
does not hold the file: PostgreSQL asks for files past the end of the WAL
and for timeline history files that may not exist, and that is how it
learns there are none. Any other failure also exits non-zero with the
reason on stderr, which lands in the restored server's log."""

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from catalog.engine.errors import EngineError
from catalog.models import Source
from pitr.restores import fetch_wal_file


class Command(BaseCommand):
    help = "Fetches one WAL file of a source from Strongroom's storage (used as restore_command)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source_id", type=int)
        parser.add_argument("name", help="the WAL file's name (%%f)")
        parser.add_argument("path", help="where to write it (%%p)")

    def handle(self, source_id: int, name: str, path: str, **options: Any) -> None:
        source = Source.objects.filter(pk=source_id).first()
        if source is None:
            self.stderr.write(f"wal_fetch: there is no source {source_id}")
            sys.exit(2)
        try:
            found = fetch_wal_file(source, name, path)
        except (EngineError, OSError) as exc:
            self.stderr.write(f"wal_fetch: {name}: {exc}")
            sys.exit(3)
        if not found:
            self.stderr.write(f"wal_fetch: {name} is not stored")
            sys.exit(1)
