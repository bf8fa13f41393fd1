"""The manifest beside every stored object: what it is, how to read it, and
an HMAC that proves it came from the holder of the master key."""

import hashlib
import hmac
import json

FORMAT_VERSION = 1
SUFFIX = ".manifest.json"


def build_manifest(**fields):
    return {"format_version": FORMAT_VERSION, **fields}


def canonical(manifest):
    unsigned = {k: v for k, v in manifest.items() if k != "hmac"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_manifest(manifest, manifest_key):
    signed = dict(manifest)
    signed["hmac"] = hmac.new(manifest_key, canonical(manifest), hashlib.sha256).hexdigest()
    return signed


def verify_manifest(manifest, manifest_key):
    expected = hmac.new(manifest_key, canonical(manifest), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, str(manifest.get("hmac", "")))


def dumps(manifest):
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode()


def loads(data):
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


def manifest_key_for(object_key):
    return object_key + SUFFIX
