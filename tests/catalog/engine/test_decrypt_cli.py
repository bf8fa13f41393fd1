"""The standalone decrypt command, run as a user would run it."""

import subprocess
import sys
from pathlib import Path

import pytest

from catalog.engine import crypto, manifest
from catalog.engine.pipeline import run_pipeline
from catalog.engine.storage.local import LocalStorage
from tests.catalog.engine.test_pipeline import ListDump, sample_chunks

ROOT = Path(__file__).resolve().parents[3]


def decrypt(*args):
    return subprocess.run(
        [sys.executable, "-m", "catalog.engine.decrypt", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )


@pytest.fixture
def stored(tmp_path):
    master_key = crypto.generate_master_key()
    crypto.write_key_file(tmp_path / "mk-1.key", "mk-1", master_key)
    storage = LocalStorage(tmp_path)
    chunks = sample_chunks()
    result = run_pipeline(
        ListDump(chunks),
        compression="zstd",
        encryptor=crypto.Encryptor(master_key, "mk-1"),
        writers={"disk": storage.open_writer("b.dump.zst.enc")},
    )
    signed = manifest.sign_manifest(
        manifest.build_manifest(sha256=result.sha256, stored_bytes=result.stored_bytes, manifest_key_id="mk-1"),
        crypto.derive_manifest_key(master_key),
    )
    storage.put_bytes("b.dump.zst.enc" + manifest.SUFFIX, manifest.dumps(signed))
    return tmp_path, b"".join(chunks)


def test_decrypts_with_the_key_file_and_checks_the_manifest(stored):
    directory, plain = stored
    completed = decrypt("--key-file", directory / "mk-1.key", directory / "b.dump.zst.enc", directory / "out.dump")
    assert completed.returncode == 0, completed.stderr
    assert (directory / "out.dump").read_bytes() == plain


def test_a_tampered_object_exits_2_and_writes_nothing(stored):
    directory, _ = stored
    path = directory / "b.dump.zst.enc"
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    completed = decrypt("--key-file", directory / "mk-1.key", path, directory / "out.dump")
    assert completed.returncode == 2
    assert "damaged" in completed.stderr and "nothing was written" in completed.stderr
    assert not (directory / "out.dump").exists()
    assert not list(directory.glob(".decrypt-*"))


def test_a_forged_manifest_exits_2(stored):
    directory, _ = stored
    manifest_path = directory / ("b.dump.zst.enc" + manifest.SUFFIX)
    forged = manifest.loads(manifest_path.read_bytes())
    forged["stored_bytes"] += 1
    manifest_path.write_bytes(manifest.dumps(forged))
    completed = decrypt("--key-file", directory / "mk-1.key", directory / "b.dump.zst.enc", directory / "out.dump")
    assert completed.returncode == 2
    assert "not signed by any of the given keys" in completed.stderr


def test_a_missing_key_file_exits_2_with_the_path(stored, tmp_path):
    directory, _ = stored
    completed = decrypt("--key-file", tmp_path / "nope.key", directory / "b.dump.zst.enc", directory / "out.dump")
    assert completed.returncode == 2
    assert "nope.key" in completed.stderr
