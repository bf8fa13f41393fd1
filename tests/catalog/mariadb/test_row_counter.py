"""The row counter reads mariadb-dump's own output: every table's count must
equal COUNT(*), whatever the values hold and however the stream is cut."""

import pytest

from catalog.engine import mariadb_dump
from catalog.engine.mariadb_dump import DumpNotUnderstood, RowCounter, count_rows
from tests.catalog.mariadb.conftest import dump_of
from tests.harness.mariadb_sample import TRICKY_STRINGS, quote, sample_database, table_counts


def counted_in_chunks(dump, size):
    counter = RowCounter()
    for start in range(0, len(dump), size):
        counter.feed(dump[start : start + size])
    return counter.finish()


@pytest.fixture(scope="module")
def sample_dump(mariadb_server):
    """The sample's dump and its tables' COUNT(*), made once for these tests."""
    with sample_database(mariadb_server) as name, mariadb_server.connect(name) as conn:
        return dump_of(mariadb_server, name), table_counts(conn, name)


def test_it_counts_every_table_of_the_sample_as_count_star_does(sample_dump):
    dump, expected = sample_dump
    assert count_rows(dump) == expected
    assert expected["payment"] == 4000 and expected["odd`name"] == 54 and expected["order lines"] == 295


@pytest.mark.parametrize("size", [7, 1000, 65536])
def test_it_counts_the_same_however_the_stream_is_cut(sample_dump, size):
    dump, expected = sample_dump
    assert counted_in_chunks(dump, size) == expected


def test_it_counts_mysqldumps_layout_too(sample_dump):
    """mysqldump writes all of a statement's rows on one line: there every
    string literal is skipped and the parentheses left are counted."""
    dump, expected = sample_dump
    one_line = dump.replace(b"),\n(", b"),(").replace(b" VALUES\n(", b" VALUES (")
    assert b"),\n(" not in one_line and b" VALUES\n" not in one_line
    assert counted_in_chunks(one_line, 4096) == expected


def test_it_walks_a_row_longer_than_a_line_may_be_literal_by_literal(sample_dump, monkeypatch):
    """A single huge row is not buffered whole: past LINE_LIMIT it is walked
    value by value, a backslash at the end of a chunk included."""
    monkeypatch.setattr(mariadb_dump, "LINE_LIMIT", 64)
    dump, expected = sample_dump
    one_line = dump.replace(b"),\n(", b"),(")
    for size in (97, 4096):
        assert counted_in_chunks(one_line, size) == expected


def test_it_counts_values_full_of_what_looks_like_rows(mariadb_server, mariadb_database):
    """Quotes, backslashes, parentheses, commas, "'),('", ";" before a
    would-be newline, binary data (as hex), NULLs and emoji, many rows."""
    values = TRICKY_STRINGS + ["),\n(", ");\nINSERT INTO `t` VALUES (1);", "\\", "'", "\x00\x1a\\'"]
    with mariadb_server.connect(mariadb_database) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE `tricky ``(rows)``` (id INT AUTO_INCREMENT PRIMARY KEY, s TEXT, b BLOB, n INT, j JSON)"
        )
        rows = [(s, s.encode() + bytes(range(256)), None if i % 3 else i, None) for i, s in enumerate(values * 40)]
        cursor.executemany(f"INSERT INTO {quote('tricky `(rows)`')} (s, b, n, j) VALUES (%s, %s, %s, %s)", rows)
        cursor.execute("CREATE TABLE empty_one (id INT PRIMARY KEY)")
        expected = table_counts(conn, mariadb_database)
    dump = dump_of(mariadb_server, mariadb_database)
    assert expected == {"empty_one": 0, "tricky `(rows)`": len(values) * 40}
    assert count_rows(dump) == expected
    assert counted_in_chunks(dump, 13) == expected


ROUTINE_AND_COMMENTS = b"""-- a comment; INSERT INTO `x` VALUES (1);
/*!40101 SET NAMES utf8mb4 */;
CREATE TABLE `t` (
  `a` int COMMENT 'it''s ; a \\\\ comment
INSERT INTO `t` VALUES (9),(9);'
) ENGINE=InnoDB;
INSERT INTO `t` VALUES
(1),
(2);
DELIMITER ;;
CREATE PROCEDURE `p`()
BEGIN
INSERT INTO `t` VALUES (3),(4);
INSERT INTO `t` VALUES (5);
END ;;
/*!50003 CREATE*/ /*!50003 TRIGGER tr AFTER INSERT ON t FOR EACH ROW
INSERT INTO `t` VALUES (6) */;;
DELIMITER ;
# a hash comment
INSERT INTO `t` (`a`) VALUES (7),(8);
-- Dump completed
"""


def test_it_counts_only_the_inserts_of_data_not_those_in_routines_or_strings():
    assert count_rows(ROUTINE_AND_COMMENTS) == {"t": 4}
    assert counted_in_chunks(ROUTINE_AND_COMMENTS, 1) == {"t": 4}


def test_a_dump_cut_short_is_not_counted_as_if_whole(sample_dump):
    dump, _ = sample_dump
    cut = dump[: dump.index(b"INSERT INTO `payment`") + 200]
    with pytest.raises(DumpNotUnderstood):
        count_rows(cut)
