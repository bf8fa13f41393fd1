"""Reading a stored object back: a size that differs is said first, with the
shorter length; bytes that differ are placed as precisely as can be known
(the failing encrypted segment, how far the compressed stream decoded), and
comparing with an intact copy gives the first bad byte exactly."""

import hashlib
import os

import pytest
import zstandard

from catalog.engine import compression, crypto
from catalog.engine.compression import ZstdFrames, make_compressor
from catalog.engine.verify import check_object, first_difference

SEGMENT = 64 * 1024
SEALED = SEGMENT + crypto.TAG_SIZE
MASTER = crypto.generate_master_key()


def keyring(_key_id):
    return MASTER


def stored_object(encrypted, compression="zstd"):
    """(stored bytes, plain size, header length) of an object of some ten segments."""
    plain = b"".join(b"%d\trow of a table\n" % n for n in range(40000)) + os.urandom(600_000)
    compressor = make_compressor(compression)
    data = compressor.compress(plain) + compressor.flush()
    if not encrypted:
        return data, len(plain), 0
    encryptor = crypto.Encryptor(MASTER, "mk-1", segment_size=SEGMENT)
    sealed = encryptor.update(data) + encryptor.finalize()
    return sealed, len(plain), len(encryptor.header)


def chunks_of(data, size=100_000):
    return [data[i : i + size] for i in range(0, len(data), size)]


def check(damaged, original, plain_size):
    return check_object(chunks_of(damaged), keyring, hashlib.sha256(original).hexdigest(), len(original), plain_size)


@pytest.mark.parametrize("encrypted", [True, False])
def test_it_passes_an_intact_object(encrypted):
    data, plain, _ = stored_object(encrypted)
    result = check(data, data, plain)
    assert result.ok and (result.error, result.offset, result.segment_start) == ("", None, None)
    assert (result.stored_bytes, result.plain_bytes) == (len(data), plain)


def test_it_places_a_flipped_byte_of_an_encrypted_object_in_its_segment():
    data, plain, header = stored_object(encrypted=True)
    assert len(data) > header + 5 * SEALED
    middle = header + 4 * SEALED + 1000  # inside segment 4
    damaged = bytearray(data)
    damaged[middle] ^= 0x01

    result = check(bytes(damaged), data, plain)

    assert not result.ok and result.stored_bytes == len(data)
    assert result.offset is None  # the checksum and the tag say which segment, not which byte
    assert (result.segment_start, result.segment_length) == (header + 4 * SEALED, SEALED)
    assert result.sha256 == hashlib.sha256(damaged).hexdigest()
    assert result.error.startswith("the stored bytes differ from those written (SHA-256 ")
    assert result.error.endswith(
        f"the first bad byte is within the segment starting at byte {header + 4 * SEALED} "
        f"(segment length {SEALED}), the first that fails authentication"
    )


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_it_says_what_it_knows_of_a_flipped_byte_in_an_unencrypted_object(compression):
    data, plain, _ = stored_object(encrypted=False, compression=compression)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x01

    result = check(bytes(damaged), data, plain)

    assert not result.ok and (result.offset, result.segment_start) == (None, None)
    assert result.error.startswith("the stored bytes differ from those written (SHA-256 ")
    if compression == "none":
        assert result.error.endswith("; a checksum of the whole object cannot tell where")
    else:  # zstd's own checks stop it somewhere at or after the damage
        assert "the compressed data" in result.error and "so the first bad byte is within the first " in result.error
        decoded = int(result.error.rsplit("within the first ", 1)[1])
        assert len(data) // 2 < decoded <= len(data)


@pytest.mark.parametrize("encrypted", [True, False])
def test_it_reports_a_shortened_object_as_a_size_mismatch_first(encrypted):
    data, plain, header = stored_object(encrypted)
    cut = len(data) - 3 * SEALED - 5  # also across a segment boundary when encrypted

    result = check(data[:cut], data, plain)

    assert not result.ok and result.stored_bytes == cut
    assert result.offset == cut and result.segment_start is None
    assert result.error == (
        f"the object has {cut} bytes; {len(data)} were stored: it is cut short, the last {len(data) - cut} are missing"
    )


@pytest.mark.parametrize("encrypted", [True, False])
def test_it_reports_bytes_added_at_the_end_as_a_size_mismatch(encrypted):
    data, plain, _ = stored_object(encrypted)

    result = check(data + b"appended!", data, plain)

    assert not result.ok and result.offset == len(data) and result.stored_bytes == len(data) + 9
    assert (
        result.error
        == f"the object has {len(data) + 9} bytes; {len(data)} were stored: 9 bytes were added after its end"
    )


def test_first_difference_finds_the_exact_byte_whatever_the_chunking():
    data = os.urandom(1_000_000)
    damaged = bytearray(data)
    damaged[654_321] ^= 0x40
    assert first_difference(chunks_of(bytes(damaged), 65536), chunks_of(data, 100_000)) == 654_321
    assert first_difference([b"", data[:10], b"", data[10:]], chunks_of(data, 7777)) is None
    assert first_difference(chunks_of(data[:5000], 999), chunks_of(data, 4096)) == 5000
    assert first_difference(chunks_of(data, 4096), [data[:5000]]) == 5000
    assert first_difference([b"\x00"], [b"\x01"]) == 0
    assert first_difference([], []) is None


def test_first_difference_stops_reading_at_the_difference():
    read = []

    def chunks():
        for number in range(100):
            read.append(number)
            yield b"a" * 1000 if number != 3 else b"b" * 1000

    assert first_difference(chunks(), [b"a" * 100_000]) == 3000
    assert read == [0, 1, 2, 3]


@pytest.fixture
def small_frames(monkeypatch):
    monkeypatch.setattr(compression, "FRAME_BYTES", 1 << 17)  # the objects above then have some ten frames


def frame_ends(data):
    frames = ZstdFrames()
    frames.feed(data)
    return frames.frame_ends


@pytest.mark.parametrize("encrypted", [True, False])
def test_it_passes_an_intact_object_of_many_frames(small_frames, encrypted):
    data, plain, _ = stored_object(encrypted)
    assert len(frame_ends(stored_object(False)[0])) > 5
    result = check(data, data, plain)
    assert result.ok and (result.stored_bytes, result.plain_bytes) == (len(data), plain)


def test_it_passes_an_object_of_one_frame_from_before_frames(small_frames):
    plain = b"".join(b"%d\trow of a table\n" % n for n in range(40_000))
    params = zstandard.ZstdCompressionParameters.from_level(3, threads=-1, job_size=1 << 20, write_checksum=True)
    data = zstandard.ZstdCompressor(compression_params=params).compress(plain)
    assert len(frame_ends(data)) == 1 and len(plain) > 2 * compression.FRAME_BYTES
    result = check(data, data, len(plain))
    assert result.ok and result.plain_bytes == len(plain)


@pytest.mark.parametrize("frame", [1, 2])
def test_it_finds_a_flipped_byte_inside_a_later_frame_of_an_unencrypted_object(small_frames, frame):
    data, plain, _ = stored_object(encrypted=False)
    ends = frame_ends(data)
    flipped = (ends[frame - 1] + ends[frame]) // 2  # in the middle of frame 2 or 3
    damaged = bytearray(data)
    damaged[flipped] ^= 0x01

    result = check(bytes(damaged), data, plain)

    assert not result.ok and (result.offset, result.segment_start) == (None, None)
    assert "the compressed data is damaged (" in result.error
    decoded = int(result.error.rsplit("within the first ", 1)[1])
    assert flipped < decoded <= len(data)


def test_it_reports_an_object_of_many_frames_cut_at_a_frames_end_as_cut_short(small_frames):
    data, plain, _ = stored_object(encrypted=False)
    cut = frame_ends(data)[2]  # what is left decodes as a whole zstd stream: the size says it is not all

    result = check(data[:cut], data, plain)

    assert not result.ok and result.offset == cut
    assert result.error.startswith(f"the object has {cut} bytes; {len(data)} were stored: it is cut short")
