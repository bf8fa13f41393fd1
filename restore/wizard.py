"""The restore wizard's choices, kept in the session between steps so that
going back and forth never loses them."""

from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from catalog.models import Backup, RestoreServer, Source
from restore.models import RestoreJob

SESSION_KEY = "restore_wizard"
STEPS = [("what", "What"), ("where", "Where"), ("scope", "Scope"), ("mode", "Mode"), ("review", "Review")]
DOWNLOAD = "download"


class Wizard:
    def __init__(self, session: SessionBase) -> None:
        self.session = session
        self.data: dict[str, Any] = dict(session.get(SESSION_KEY, {}))

    def save(self, **values: Any) -> None:
        self.data.update(values)
        self.session[SESSION_KEY] = self.data

    def reset(self) -> None:
        self.data = {}
        self.session.pop(SESSION_KEY, None)

    @property
    def source(self) -> Source | None:
        pk = self.data.get("source")
        return Source.objects.filter(pk=pk).first() if pk is not None else None

    @property
    def backup(self) -> Backup | None:
        pk = self.data.get("backup")
        return Backup.objects.filter(pk=pk, status__in=Backup.WITH_DATA).first() if pk is not None else None

    @property
    def target(self) -> str:
        return self.data.get("target", RestoreJob.NEW)

    @property
    def tables(self) -> list[str]:
        return self.data.get("tables", [])

    @property
    def mode(self) -> str:
        # Into the existing database, Preview until a change is chosen: the
        # least destructive choice is the one nobody has to undo. A new
        # database can only be filled completely; a download has no mode.
        return self.data.get("mode", RestoreJob.PREVIEW) if self.target == RestoreJob.EXISTING else RestoreJob.FULL

    @property
    def restore_server(self) -> RestoreServer | None:
        """The registered server a new database goes to; None for the source's
        own (an existing database is always on the source's server)."""
        if self.target != RestoreJob.NEW or not self.data.get("restore_server"):
            return None
        return RestoreServer.objects.filter(pk=self.data["restore_server"]).first()

    def existing_database(self) -> str:
        from restore.services import existing_database

        return existing_database(self.backup.source) if self.backup else ""

    def database(self) -> str:
        if self.target == RestoreJob.EXISTING and self.backup:
            return self.existing_database()
        return self.data.get("database", "")

    def first_missing_step(self) -> str | None:
        """The step a user must go back to, if an earlier choice is missing."""
        if not self.backup:
            return "what"
        if self.target == RestoreJob.NEW and not self.data.get("database"):
            return "where"
        if self.target == RestoreJob.NEW and self.data.get("restore_server") and self.restore_server is None:
            return "where"  # the chosen server was removed meanwhile: never fall back to the source's silently
        return None

    def draft(self) -> RestoreJob:
        """An unsaved RestoreJob, to describe the plan in words."""
        backup = self.backup
        assert backup is not None  # drafted once first_missing_step() finds nothing missing
        return RestoreJob(
            backup=backup,
            source=backup.source,
            target=self.target,
            restore_server=self.restore_server,
            target_database=self.database(),
            tables=self.tables,
            mode=self.mode,
        )
