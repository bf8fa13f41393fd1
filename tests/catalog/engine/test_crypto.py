"""Segmented AES-256-GCM: round trips at every boundary, and every kind of
damage is refused rather than producing wrong plaintext."""

import os

import pytest

from catalog.engine import crypto
from catalog.engine.errors import CorruptionError

SEGMENT = 1024
TAG = crypto.TAG_SIZE


def seal(plaintext, master_key, key_id="mk-test", chunk=333):
    encryptor = crypto.Encryptor(master_key, key_id, segment_size=SEGMENT)
    out = bytearray()
    for start in range(0, len(plaintext), chunk):
        out += encryptor.update(plaintext[start : start + chunk])
    out += encryptor.finalize()
    return bytes(out), len(encryptor.header)


def open_sealed(sealed, master_key, key_id="mk-test", chunk=500):
    def keyring(wanted):
        if wanted != key_id:
            raise KeyError(wanted)
        return master_key

    decryptor = crypto.Decryptor(keyring)
    out = bytearray()
    for start in range(0, len(sealed), chunk):
        out += decryptor.update(sealed[start : start + chunk])
    out += decryptor.finalize()
    return bytes(out)


@pytest.fixture
def master_key():
    return crypto.generate_master_key()


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 5 * SEGMENT + 17])
def test_round_trip_at_segment_boundaries(master_key, size):
    plaintext = os.urandom(size)
    sealed, _ = seal(plaintext, master_key)
    assert size < 16 or plaintext not in sealed
    assert open_sealed(sealed, master_key) == plaintext


def test_each_object_gets_a_fresh_data_key_and_nonce_prefix(master_key):
    plaintext = b"same bytes" * 500
    first, _ = seal(plaintext, master_key)
    second, _ = seal(plaintext, master_key)
    assert first != second


def test_a_flipped_bit_anywhere_is_refused(master_key):
    sealed, header_length = seal(os.urandom(4 * SEGMENT), master_key)
    for offset in (0, header_length - 1, header_length + 5, header_length + SEGMENT + TAG + 3, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[offset] ^= 0x01
        with pytest.raises(CorruptionError):
            open_sealed(bytes(damaged), master_key)


def test_truncation_at_a_segment_boundary_is_refused(master_key):
    sealed, header_length = seal(os.urandom(4 * SEGMENT), master_key)
    for segments in (0, 1, 3):
        truncated = sealed[: header_length + segments * (SEGMENT + TAG)]
        with pytest.raises(CorruptionError, match="truncated|damaged"):
            open_sealed(truncated, master_key)


def test_reordered_segments_are_refused(master_key):
    sealed, header_length = seal(os.urandom(4 * SEGMENT), master_key)
    body = sealed[header_length:]
    size = SEGMENT + TAG
    segments = [body[i : i + size] for i in range(0, len(body), size)]
    segments[0], segments[1] = segments[1], segments[0]
    with pytest.raises(CorruptionError, match="segment 0"):
        open_sealed(sealed[:header_length] + b"".join(segments), master_key)


def test_trailing_bytes_are_refused(master_key):
    sealed, _ = seal(os.urandom(2 * SEGMENT), master_key)
    with pytest.raises(CorruptionError):
        open_sealed(sealed + b"extra", master_key)


def test_the_wrong_master_key_is_refused(master_key):
    sealed, _ = seal(b"secret rows", master_key)
    with pytest.raises(CorruptionError, match="wrong master key"):
        open_sealed(sealed, crypto.generate_master_key())


def test_an_unknown_key_id_names_the_key_it_needs(master_key):
    sealed, _ = seal(b"secret rows", master_key, key_id="mk-2026-01")
    with pytest.raises(CorruptionError, match="mk-2026-01 is not available"):
        open_sealed(sealed, master_key, key_id="mk-other")


def test_key_files_round_trip_with_private_permissions(tmp_path, master_key):
    path = tmp_path / "mk-1.key"
    crypto.write_key_file(path, "mk-1", master_key)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert crypto.load_key_file(path) == ("mk-1", master_key)
    assert list(tmp_path.iterdir()) == [path]


def test_a_file_that_is_not_a_key_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(CorruptionError, match="not a Strongroom master key file"):
        crypto.load_key_file(path)


def test_a_key_file_is_never_overwritten(tmp_path, master_key):
    path = tmp_path / "mk-1.key"
    crypto.write_key_file(path, "mk-1", master_key)
    with pytest.raises(FileExistsError):
        crypto.write_key_file(path, "mk-1", crypto.generate_master_key())
    assert crypto.load_key_file(path) == ("mk-1", master_key)
    assert list(tmp_path.iterdir()) == [path]
