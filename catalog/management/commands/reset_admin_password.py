"""A forgotten administrator password: a new generated one, written to the
password file (0600) rather than the console, the user's sign-in lockouts
cleared, and an audit event. `manage.py changepassword NAME` sets one you
type instead (it clears no lockout: `manage.py axes_reset_username NAME`)."""

from typing import Any

from axes.utils import reset as reset_sign_in_attempts
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog import admin_password, audit

ACTOR = "manage.py reset_admin_password"


class Command(BaseCommand):
    help = (
        "Gives an administrator a new generated password, written to the admin-password file in the data "
        "directory (readable only by the service user), and clears their sign-in lockouts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", help="the administrator (default: admin, else the first superuser)")

    def handle(self, *args: Any, username: str | None = None, **options: Any) -> None:
        user = self.find_user(username)
        password = admin_password.generate()
        with transaction.atomic():
            user.set_password(password)
            user.is_active = True
            user.save(update_fields=["password", "is_active"])
            cleared = reset_sign_in_attempts(username=user.get_username())
            audit.record(
                ACTOR, "user.password_reset", user, {"username": user.get_username(), "lockouts_cleared": cleared}
            )
            path = admin_password.save(password)
        self.stdout.write(
            self.style.SUCCESS(f"New password for {user.get_username()} is in {path} (readable only by you).")
        )
        if cleared:
            self.stdout.write(
                f"Cleared {cleared} record{'s' if cleared != 1 else ''} of failed sign-ins: the lockout is over."
            )

    def find_user(self, username: str | None) -> User:
        users = get_user_model().objects
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"No user is called {username!r}.")
            if not user.is_superuser and not user.has_perm("catalog.operate"):
                raise CommandError(f"{username} is not an administrator; use `manage.py changepassword {username}`.")
            return user
        user = admin_password.first_administrator() or users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("There is no administrator yet: `manage.py bootstrap` makes one.")
        return user
