"""PostgreSQL log sequence numbers (LSNs) and the WAL segment files that hold them.

An LSN is a byte position in the WAL stream, written as two hex numbers
('0/3000028': high and low 32 bits). The stream is cut into segments of
wal_segment_size bytes; a segment's position is its number in the stream
(LSN // segment size). A segment's file name is TTTTTTTT XXXXXXXX YYYYYYYY
(timeline, log id, segment in that log, in hex); how many segments a log id
holds depends on the segment size, so every conversion takes it.
"""

DEFAULT_SEGMENT_SIZE = 16 << 20


def segments_per_log(segment_size: int) -> int:
    return 0x100000000 // segment_size


def parse_lsn(lsn: str) -> int:
    """'0/3000028' -> 50331688."""
    high, _, low = str(lsn).partition("/")
    if not low:
        raise ValueError(f"Not an LSN: {lsn!r}")
    return (int(high, 16) << 32) + int(low, 16)


def segment_name_for_position(timeline: int, position: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The file name of the segment at `position`: its number in the WAL
    stream, as wal.segment_position() reads it back from the name."""
    per_log = segments_per_log(segment_size)
    return f"{timeline:08X}{position // per_log:08X}{position % per_log:08X}"


def segment_name_for_lsn(timeline: int, lsn: str | int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The file name of the segment holding the byte at `lsn` (text or number)."""
    value = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    return segment_name_for_position(timeline, value // segment_size, segment_size)
