"""First start: a master key, an administrator, and the app's own database as
a first source with a local destination and a daily plan. Safe to re-run."""

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from catalog import admin_password, keyring, services
from catalog.engine.files import make_private_dirs
from catalog.models import BackupPlan, Destination, Key, Source

ACTOR = "bootstrap"


class Command(BaseCommand):
    help = "Prepares a fresh Strongroom: master key, administrator, first source, destination and plan."

    def handle(self, *args: Any, **options: Any) -> None:
        self.ensure_master_key()
        self.ensure_admin()
        self.ensure_first_plan()

    def ensure_master_key(self) -> None:
        if Key.objects.filter(is_active=True).exists():
            return
        key = keyring.first_master_key()  # a reinstall with the saved key files takes the newest of them
        where = keyring.key_location(key)
        if key.origin == Key.IMPORTED:
            self.stdout.write(self.style.SUCCESS(f"The saved master key {where} is the active key again."))
            return
        banner = "!" * 72
        if key.sealed_key:  # the database store: no file here, the Keys page exports one
            what = (
                f"A new master key was generated: {key.key_id}, in {where}\n"
                "Encrypted backups can only be restored with it. Download its file from the\n"
                "Keys page now and keep it in a safe place that is NOT this machine.\n"
            )
        else:
            what = (
                f"A new master key was generated: {where}\n"
                "Encrypted backups can only be restored with this file. Copy it now to a\n"
                "safe place that is NOT this machine (a password manager, a vault).\n"
            )
        self.stdout.write(self.style.WARNING(f"{banner}\n{what}{banner}"))

    def ensure_admin(self) -> None:
        if User.objects.filter(is_superuser=True).exists():
            return
        password = settings_password()
        generated = password is None
        password = password or admin_password.generate()
        user = User.objects.create_superuser(admin_password.DEFAULT_USERNAME, "", password)
        user.groups.add(Group.objects.get(name="Administrators"))
        if generated:
            # To a file only the service user reads, not to the console (which may be logged).
            path = admin_password.save(password)
            self.stdout.write(self.style.SUCCESS(f"Created administrator 'admin': its generated password is in {path}"))
            self.stdout.write("(readable only by you; set STRONGROOM_ADMIN_PASSWORD to choose it yourself)")
        else:
            self.stdout.write(
                self.style.SUCCESS("Created administrator 'admin' (password from STRONGROOM_ADMIN_PASSWORD)")
            )

    def ensure_first_plan(self) -> None:
        database = settings.DATABASES["default"]
        if Source.objects.exists() or database["ENGINE"] != "django.db.backends.sqlite3":
            return
        source = services.save_source(
            ACTOR, Source(name="Strongroom metadata", engine="sqlite", sqlite_path=str(database["NAME"]), port=None)
        )
        backups_dir = settings.DATA_DIR / "backups"
        make_private_dirs(backups_dir)
        destination = services.save_destination(
            ACTOR, Destination(name="Local backups", kind="local", path=str(backups_dir))
        )
        plan = BackupPlan(name="Daily metadata backup", source=source, schedule="30 2 * * *", format="sqlite")
        services.save_plan(ACTOR, plan, destinations=[destination])
        self.stdout.write(f"Registered {source} with a daily plan writing to {backups_dir}")


def settings_password() -> str | None:
    from backupsite.envconfig import env

    return env("STRONGROOM_ADMIN_PASSWORD") or None
