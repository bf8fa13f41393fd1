"""Check the audit trail's hash chain: exit 0 when intact, 1 at the first
broken link (edited, deleted or reordered event)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.audit import verify_chain


class Command(BaseCommand):
    help = "Walk the audit trail's hash chain in id order and report the first broken link."

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain()
        if not result.intact:
            raise CommandError(result.summary(), returncode=1)
        self.stdout.write(result.summary())
        if result.last_id is not None:
            # Kept elsewhere, the head hash also reveals events removed from the end.
            self.stdout.write(f"latest event #{result.last_id}, hash {result.head}")
