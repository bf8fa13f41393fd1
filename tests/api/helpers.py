"""Tokens and catalog rows for the API tests, made through the services."""

import sqlite3
from datetime import timedelta

from django.utils import timezone

from catalog import services
from catalog.api import tokens
from catalog.models import Backup, Copy, Source
from tests.factories import local_destination, make_plan


def make_token(scopes=("read",), name="CI job", **fields):
    """(token, raw); `fields` are set afterwards (expires_at, revoked_at…)."""
    token, raw = tokens.create_token("test", name, list(scopes))
    if fields:
        for field, value in fields.items():
            setattr(token, field, value)
        token.save()
    return token, raw


def bearer(raw):
    return {"Authorization": f"Bearer {raw}"}


def sqlite_source(tmp_path, name="Shop"):
    """A small SQLite database as a source, so a backup of it runs in a blink."""
    path = tmp_path / f"{name.lower()}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO items (name) VALUES ('bolt'), ('nut')")
    return services.save_source("test", Source(name=name, engine="sqlite", sqlite_path=str(path)))


def sqlite_plan(tmp_path, name="Hourly", source=None):
    source = source or sqlite_source(tmp_path)
    destination = local_destination(tmp_path / f"store-{name}", name=f"Disk {name}")
    return make_plan(source, [destination], name=name, format="sqlite", compression="zstd", encrypt=False)


def recorded_backup(plan, status=Backup.SUCCEEDED, label="", minutes_ago=0, size=1000):
    """A backup row as if a worker had run it (no data behind it)."""
    now = timezone.now() - timedelta(minutes=minutes_ago)
    backup = Backup.objects.create(
        source=plan.source, plan=plan, status=status, label=label, format=plan.format, compression=plan.compression,
        encrypted=plan.encrypt, created_at=now, started_at=now, finished_at=now + timedelta(seconds=42),
        raw_bytes=size * 3, stored_bytes=size, sha256="ab" * 32, table_counts={"main.items": 2},
    )
    if status in Backup.WITH_DATA:
        destination = plan.destinations.first()
        Copy.objects.create(backup=backup, destination=destination, status=Copy.DURABLE, key=f"k/{backup.pk}",
                            size=size, sha256="ab" * 32, durable_at=now)
    return backup
