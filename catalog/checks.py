"""Start-up checks: the data directory, the metadata database and the key
files must be the service user's alone; hosts sharing a metadata database
must share the secret key and the master keys.

Strongroom makes what it writes private itself (catalog/engine/files.py and
the umask in backupsite/settings.py), but files made before, by hand or by an
older version may be open: another local user who reads the metadata database
can take a session key from it and be signed in, and one who reads a key file
can decrypt every backup. Django runs this check before `manage.py check`
(with or without --deploy), serve, bootstrap, runserver, migrate and the
workers; the web server's WSGI module logs the same warnings when it loads.
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from catalog.engine.files import open_to_others

log = logging.getLogger(__name__)

DATA_DIR_OPEN = "catalog.W001"
DATABASE_OPEN = "catalog.W002"
KEY_OPEN = "catalog.W003"
SECRET_KEY_OPEN = "catalog.W004"
SECRET_KEY_PER_HOST = "catalog.W005"
MASTER_KEYS_PER_HOST = "catalog.W006"


def private_paths() -> list[tuple[str, str, Path, str]]:
    """(check id, what it is, path, why it matters) of every existing path to check."""
    data_dir = Path(settings.DATA_DIR)
    key_dir = Path(settings.KEY_DIR)
    found = [
        (
            DATA_DIR_OPEN,
            "the data directory",
            data_dir,
            "it holds the metadata database, spools, scratch files and the keys",
        ),
        (
            SECRET_KEY_OPEN,
            "the secret key file",
            data_dir / "secret_key",
            "whoever reads it can forge sessions and sign in",
        ),
    ]
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = str(database["NAME"])
        why = "it holds the session keys (whoever reads one is signed in) and every setting"
        found += [(DATABASE_OPEN, "the metadata database", Path(name + suffix), why) for suffix in ("", "-wal", "-shm")]
    why = "whoever reads a master key can decrypt every backup sealed with it"
    found.append((KEY_OPEN, "the key directory", key_dir, why))
    if key_dir.is_dir():
        found += [(KEY_OPEN, "the master key file", path, why) for path in sorted(key_dir.glob("*.key"))]
    return [entry for entry in found if os.path.exists(entry[2])]


# Whether the checks ran in this process already (runserver runs them, then loads the WSGI module).
_checked = False


def check_private_files(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    global _checked
    _checked = True
    warnings: list[checks.CheckMessage] = []
    for check_id, what, path, why in private_paths():
        try:
            opened = open_to_others(path)
        except OSError:
            continue
        if not opened:
            continue
        fix = f"chmod go-rw {path}" if path.is_dir() else f"chmod 600 {path}"
        warnings.append(
            checks.Warning(
                f"Other users of this machine can {opened} {what} {path}: {why}.",
                hint=f"Make it the service user's alone: {fix}",
                id=check_id,
            )
        )
    return warnings


def log_open_files() -> None:
    """The same warnings in the log, for a web server that loads the WSGI
    module directly (gunicorn) and so never runs Django's checks."""
    if _checked:
        return
    for warning in check_private_files():
        log.warning("%s %s (%s)", warning.msg, warning.hint, warning.id)


def check_shared_secret_key(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Hosts that share a metadata database (PostgreSQL) each sign sessions,
    CSRF tokens and queued tasks with SECRET_KEY: with one generated per host,
    a sign-in on one host means nothing to the next behind a load balancer, and
    a task queued on one host is refused by another's workers as forged."""
    if not settings.SECRET_KEY_GENERATED or settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        return []
    return [
        checks.Warning(
            "SECRET_KEY was generated on this host, and the metadata database can be shared with other hosts: "
            "each would sign sessions and queued tasks with its own key, so a sign-in on one would not hold on "
            "another, and work queued on one would be refused by the others' workers.",
            hint="Give every host the same SECRET_KEY, or SECRET_KEY_FILE naming a file that holds it "
            f"(this host's is in {Path(settings.DATA_DIR) / 'secret_key'}).",
            id=SECRET_KEY_PER_HOST,
        )
    ]


def check_keys_per_host(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Hosts that share a metadata database (PostgreSQL) each need every
    master key: kept as files in each host's key directory, a key made or
    rotated on one host is missing on the others, whose jobs then fail."""
    database_store = settings.KEY_ENCRYPTION_KEY is not None or bool(settings.KMS_KEY_ID)
    if database_store or settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        return []
    return [
        checks.Warning(
            f"Master keys are files in {settings.KEY_DIR}, on this host only, and the metadata database can be "
            "shared with other hosts: a key made or rotated on one host would be missing on the others.",
            hint="Give every host the same STRONGROOM_KEK (or STRONGROOM_KEK_FILE), 32 random bytes in base64, "
            "then run `manage.py seal_keys` once to move the key files into the metadata database "
            "(docs/DEPLOYMENT.md, Keys across hosts).",
            id=MASTER_KEYS_PER_HOST,
        )
    ]
