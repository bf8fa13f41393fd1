"""Turn a stored Strongroom object back into a plain dump, without Strongroom.

    python -m catalog.engine.decrypt --key-file mk-2026....key IN OUT

IN and OUT may be "-" for standard input and output. The object's header
names the master key it was sealed with; after a key rotation its manifest
also carries the data key wrapped by each newer key, so the newest key file
and the manifest are enough. Give every key file that might be needed. The
output is decrypted and decompressed (zstd or gzip, detected), ready for
`pg_restore` or `psql`; --keep-compressed skips the decompression.

    python -m catalog.engine.decrypt --fingerprint --key-file mk-2026....key

prints each key file's id and fingerprint instead, to check a copy kept away
from Strongroom against the fingerprint on its Keys page.

If a manifest is given with --manifest, or IN.manifest.json lies beside IN,
its signature and the object's SHA-256 are checked too. Exit codes: 0 done,
1 bad usage or unreadable input, 2 the object or manifest failed a check.
Only this package, `cryptography` and `zstandard` are needed.
"""

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from catalog.engine import crypto, manifest
from catalog.engine.errors import CorruptionError
from catalog.engine.pipeline import restore_stream

CHUNK = 1 << 20


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def load_keys(paths: Iterable[str]) -> dict[str, bytes]:
    keys = {}
    for path in paths:
        key_id, key = crypto.load_key_file(path)
        keys[key_id] = key
    return keys


def check_manifest(path: str, keys: dict[str, bytes], in_path: str) -> tuple[str | None, crypto.KeyWraps]:
    """Verifies the manifest's HMAC with any given key; returns its SHA-256
    and the extra wraps of the data key that key rotation added."""
    with open(path, "rb") as handle:
        data = manifest.loads(handle.read())
    key_id = data.get("manifest_key_id")
    candidates = [keys[key_id]] if key_id in keys else list(keys.values())
    if not any(manifest.verify_manifest(data, crypto.derive_manifest_key(k)) for k in candidates):
        raise CorruptionError(f"manifest {path} is not signed by any of the given keys")
    if data.get("stored_bytes") is not None and in_path != "-" and os.path.getsize(in_path) != data["stored_bytes"]:
        raise CorruptionError(
            f"{in_path} has {os.path.getsize(in_path)} bytes; the manifest says {data['stored_bytes']}"
        )
    key_wraps: crypto.KeyWraps = (data.get("encryption") or {}).get("key_wraps") or {}
    return data.get("sha256"), key_wraps


def write_output(out_path: str, stream: Iterable[bytes]) -> None:
    if out_path == "-":
        for data in stream:
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    directory = os.path.dirname(os.path.abspath(out_path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".decrypt-")
    try:
        with os.fdopen(fd, "wb") as handle:
            for data in stream:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, out_path)
    except BaseException:
        os.unlink(temp)
        raise


def print_fingerprints(paths: Iterable[str]) -> int:
    try:
        for path in paths:
            key_id, key = crypto.load_key_file(path)
            print(f"{key_id}  fingerprint {crypto.key_fingerprint(key)}  ({path})")
    except CorruptionError as exc:
        print(f"decrypt: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m catalog.engine.decrypt", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--key-file", action="append", default=[], help="a master key file (repeatable)")
    parser.add_argument("--manifest", help="the object's manifest (default: IN.manifest.json if present)")
    parser.add_argument("--keep-compressed", action="store_true", help="decrypt only; do not decompress")
    parser.add_argument(
        "--fingerprint", action="store_true", help="print each key file's id and fingerprint, and nothing else"
    )
    parser.add_argument("input", metavar="IN", nargs="?")
    parser.add_argument("output", metavar="OUT", nargs="?")
    args = parser.parse_args(argv)
    if args.fingerprint:
        return print_fingerprints(args.key_file)
    if args.output is None:
        parser.error("IN and OUT are required (or --fingerprint)")

    try:
        keys = load_keys(args.key_file)
        manifest_path = args.manifest
        if manifest_path is None and args.input != "-" and os.path.exists(args.input + manifest.SUFFIX):
            manifest_path = args.input + manifest.SUFFIX
        expected, key_wraps = check_manifest(manifest_path, keys, args.input) if manifest_path else (None, {})
        # SIM115: the file outlives this try; the `with source:` below closes it.
        source: BinaryIO = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    except CorruptionError as exc:
        print(f"decrypt: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"decrypt: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1

    def keyring(key_id: str) -> bytes:
        return keys[key_id]

    try:
        with source:
            stream = restore_stream(
                read_chunks(source),
                keyring=keyring,
                expected_sha256=expected,
                decompress=not args.keep_compressed,
                key_wraps=key_wraps,
            )
            write_output(args.output, stream)
    except CorruptionError as exc:
        print(f"decrypt: {exc}; nothing was written", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"decrypt: {exc.strerror}: {exc.filename or args.output}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
