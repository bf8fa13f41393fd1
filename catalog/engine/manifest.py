"""The manifest beside every stored object: what it is, how to read it, and
an HMAC that proves it came from the holder of the master key."""

import hashlib
import hmac
import json
from typing import Any

FORMAT_VERSION = 1
SUFFIX = ".manifest.json"
# The hold record: a small signed object beside the manifest that says whether
# the backup is pinned or under legal hold now (see catalog/holds.py).
HOLD_SUFFIX = ".hold"
HOLD_KIND = "hold"
# A PostgreSQL backup's roles and database properties, encrypted like the
# object and named by its SHA-256 in the manifest (see catalog/backup_globals.py).
GLOBALS_SUFFIX = ".globals"
# What may follow a manifest's key: the objects that belong with it.
COMPANION_SUFFIXES = (HOLD_SUFFIX, GLOBALS_SUFFIX)

# A manifest or hold record: a JSON object.
Manifest = dict[str, Any]


def build_manifest(**fields: Any) -> Manifest:
    return {"format_version": FORMAT_VERSION, **fields}


def canonical(manifest: Manifest) -> bytes:
    unsigned = {k: v for k, v in manifest.items() if k != "hmac"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_manifest(manifest: Manifest, manifest_key: bytes) -> Manifest:
    signed = dict(manifest)
    signed["hmac"] = hmac.new(manifest_key, canonical(manifest), hashlib.sha256).hexdigest()
    return signed


def verify_manifest(manifest: Manifest, manifest_key: bytes) -> bool:
    expected = hmac.new(manifest_key, canonical(manifest), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, str(manifest.get("hmac", "")))


def dumps(manifest: Manifest) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode()


def loads(data: str | bytes) -> Manifest:
    """The manifest as a dict. ValueError for anything that is not one: bad
    JSON, another kind of JSON value, or nesting too deep to parse (a file
    that whoever can write to a destination may have put there)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply to be a manifest") from None
    if not isinstance(value, dict):
        raise ValueError("the manifest is not a JSON object")
    return value


def manifest_key_for(object_key: str) -> str:
    return object_key + SUFFIX


def hold_key_for(manifest_key: str) -> str:
    return manifest_key + HOLD_SUFFIX


def globals_key_for(manifest_key: str) -> str:
    return manifest_key + GLOBALS_SUFFIX


def stored_keys(object_key: str, manifest_key: str | None = None) -> list[str]:
    """Every key a stored copy occupies, in the order to delete them: the
    manifest last, so that a crash midway leaves a lone manifest, which the
    orphan scan reports, never a hold record or object without one."""
    manifest_key = manifest_key or manifest_key_for(object_key)
    return [object_key, hold_key_for(manifest_key), globals_key_for(manifest_key), manifest_key]


def build_hold_record(
    *,
    backup_id: int,
    object_key: str,
    sha256: str,
    pinned: bool,
    legal_hold: bool,
    hold_reason: str,
    changed_at: str | None,
) -> Manifest:
    """The unsigned hold record of one copy. It names the object and its
    SHA-256, so a record cannot be moved onto another backup; `kind` keeps it
    from ever passing for a manifest (and a manifest for it)."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": HOLD_KIND,
        "backup_id": backup_id,
        "object_key": object_key,
        "sha256": sha256,
        "pinned": pinned,
        "legal_hold": legal_hold,
        "hold_reason": hold_reason,
        "changed_at": changed_at,
    }
