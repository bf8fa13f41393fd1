"""Two-factor lost with no administrator left to reset it (the only
administrator lost their phone or security keys and their recovery codes): from a shell on
the server, which is the proof of authority here. With
`manage.py reset_admin_password`, it gets anyone back in."""

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import two_factor
from catalog.errors import Refused

ACTOR = "manage.py reset_two_factor"


class Command(BaseCommand):
    help = (
        "Removes a person's authenticator, security keys and recovery codes, "
        "so that their password alone signs them in."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user is called {username!r}.")
        try:
            two_factor.reset_two_factor(ACTOR, user)
        except Refused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Two-factor of {username} is reset: their password alone signs them in until they set it up again."
            )
        )
