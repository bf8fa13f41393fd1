"""An API token from the command line, for automation that sets a host up
without a browser. The token belongs to the person named (it stops working
when they are deactivated) and is printed once, alone on standard output, so
that `TOKEN=$(manage.py create_token ...)` captures it and nothing else."""

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.api import tokens
from catalog.api.models import ApiToken
from catalog.errors import Refused

ACTOR = "manage.py create_token"


class Command(BaseCommand):
    help = "Creates an API token that belongs to a person, and prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="the user name of the person the token belongs to")
        parser.add_argument("--name", required=True, help='what uses it, e.g. "CI migrations"')
        parser.add_argument(
            "--scope",
            action="append",
            choices=[scope for scope, _ in ApiToken.SCOPE_CHOICES],
            help="read (the default), backup or restore; repeat for several",
        )
        parser.add_argument("--expires-in-days", type=int, help="leave out for a token that does not expire")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = User.objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(f"No user is called {options['owner']!r}.")
        if options["expires_in_days"] is not None and not 1 <= options["expires_in_days"] <= 3650:
            raise CommandError("--expires-in-days must be between 1 and 3650.")
        scopes = sorted(set(options["scope"] or [ApiToken.READ]))
        if scopes != [ApiToken.READ] and not owner.has_perm("catalog.operate"):
            raise CommandError(f"{owner.get_username()} is not an administrator: their tokens may only read.")
        try:
            token, raw = tokens.create_token(ACTOR, options["name"], scopes, options["expires_in_days"], owner=owner)
        except Refused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"Created {token}, belonging to {owner.get_username()}, with scopes {', '.join(scopes)}.")
        self.stdout.write(raw)
