"""A PostgreSQL backup's globals (catalog/engine/pgglobals.py): its roles and
database properties, stored beside every copy as `<manifest key>.globals`.

The document is JSON, encrypted with the backup's own data key when the
backup is encrypted (role settings and comments may say more than they
should), and named by its SHA-256 in the catalog and the signed manifest, so
it cannot be swapped for another. Role names alone are kept in the clear
(Backup.roles): the wizard compares them with a target server without
reading storage.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from catalog import keyring
from catalog.engine import manifest, pgglobals
from catalog.engine.crypto import Encryptor
from catalog.engine.dumpers import connect_server
from catalog.engine.errors import EngineError
from catalog.engine.pipeline import restore_stream
from catalog.models import Backup, Copy


class GlobalsUnavailable(EngineError):
    """No copy's globals could be read; the message says why, in words."""


def key_for(copy: Copy) -> str:
    return manifest.globals_key_for(copy.manifest_key or manifest.manifest_key_for(copy.key))


def seal(document: Mapping[str, Any], encryptor: Encryptor | None = None) -> bytes:
    """The stored bytes of a globals document."""
    plain = json.dumps(document, sort_keys=True, ensure_ascii=False).encode()
    if encryptor is None:
        return plain
    sealer = encryptor.sibling()
    return sealer.update(plain) + sealer.finalize()


def record(backup: Backup, document: Mapping[str, Any], encryptor: Encryptor | None = None) -> bytes:
    """Fills in the backup's roles and globals SHA-256; returns the bytes to store beside each copy."""
    data = seal(document, encryptor)
    backup.roles = [role["name"] for role in document["roles"]]
    backup.globals_sha256 = hashlib.sha256(data).hexdigest()
    return data


def store(copy: Copy, data: bytes) -> None:
    copy.destination.storage().put_bytes(key_for(copy), data, retain_until=copy.locked_until)


def read(backup: Backup) -> dict[str, Any]:
    """The backup's globals document from the first copy that has it intact."""
    if not backup.globals_sha256:
        raise GlobalsUnavailable(f"Backup #{backup.pk} was taken before Strongroom kept roles and database properties")
    problems: list[str] = []
    for copy in backup.readable_copies():
        try:
            data = copy.destination.storage().get_bytes(key_for(copy))
            plain = b"".join(
                restore_stream(
                    [data], keyring=keyring.lookup, expected_sha256=backup.globals_sha256, key_wraps=backup.key_wraps
                )
            )
            document: dict[str, Any] = json.loads(plain)
            return document
        except (EngineError, ValueError) as exc:
            problems.append(f"{copy.destination}: {exc}")
    raise GlobalsUnavailable("The backup's roles and database properties could not be read: " + "; ".join(problems))


def roles_missing(backup: Backup, server: Mapping[str, Any]) -> list[str]:
    """The roles the backup's objects, grants and settings name that the
    server (connection parameters) lacks: a restore with owners stops at the
    first of them. Empty when the backup names none (SQLite, exports, older
    backups)."""
    if not backup.roles or backup.source.engine != "postgresql" or backup.is_export():
        return []
    with connect_server(server) as conn:
        return pgglobals.missing_roles(conn, backup.roles)
