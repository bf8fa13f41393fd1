"""The import checks' own pieces, without a database: the COPY row counter
whatever the chunk boundaries, gzip of several members, a line start split
across two chunks, and what detect() says of files that are not importable
dumps. (Real dumps go through tests/catalog/test_import.py.)"""

import gzip
import re

import pytest

from catalog.engine import crypto
from catalog.engine.copycount import CopyCounter
from catalog.engine.errors import CorruptionError
from catalog.engine.imports import MARIADB_DATABASE_LINE, ImportRefused, LineStarts, detect, gunzip

SQL = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"COPY public.t (id, s) FROM stdin;\n1\tone\n2\ttwo\\nstill two\n3\t\\\\.\n\\.\n\n"
    b'COPY "Inv"."Stock ""Item""" (a) FROM stdin;\n\\.\n\n'
    b"COPY public.e  FROM stdin;\n\n\\.\n"
    b"-- PostgreSQL database dump complete\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(SQL)])
def test_copy_rows_are_counted_whatever_the_chunks(size):
    counter = CopyCounter()
    for start in range(0, len(SQL), size):
        counter.feed(SQL[start : start + size])

    assert counter.finish() == {"public.t": 3, 'Inv.Stock "Item"': 0, "public.e": 1}
    assert counter.sections == 3 and not counter.cut_short and not counter.inserts and not counter.connects


def test_a_stream_that_ends_inside_rows_is_cut_short():
    counter = CopyCounter()
    counter.feed(SQL[: SQL.index(b"2\ttwo")])
    counter.finish()
    assert counter.cut_short


def test_inserts_and_connects_are_noted():
    counter = CopyCounter()
    counter.feed(b"CREATE DATABASE shop;\n\\connect shop\nINSERT INTO public.t VALUES (1);\n")
    counter.finish()
    assert counter.inserts and counter.connects and counter.counts == {}


def test_gzip_of_several_members_is_read_whole_and_a_cut_one_refused():
    data = gzip.compress(b"first member\n") + gzip.compress(b"second member\n")
    assert b"".join(gunzip([data[:5], data[5:30], data[30:]])) == b"first member\nsecond member\n"
    with pytest.raises(CorruptionError, match="truncated"):
        b"".join(gunzip([data[:-4]]))


def test_a_line_start_split_across_chunks_is_found():
    starts = LineStarts(MARIADB_DATABASE_LINE)
    assert not starts.found(b"-- header\nUS")
    assert starts.found(b"E `shop`;\n")
    assert not LineStarts(MARIADB_DATABASE_LINE).found(b"SELECT 'x USE `y`';\nINSERT INTO t VALUES ('USE `z`');\n")


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"PGDMP\x01\x0e\x00\x04\x08\x03\x00\x00", "the table of contents (toc.dat) of a pg_dump dump alone"),
        (b"--\n-- PostgreSQL database cluster dump\n--\n", "a pg_dumpall dump of a whole cluster"),
        (b"hello world\n", "this one starts with the line “hello world”"),
        (b"\x00\x01\x02binary", "This file is not a dump Strongroom can import."),
    ],
)
def test_what_is_not_an_importable_dump_is_said_in_words(head, said):
    with pytest.raises(ImportRefused, match=re.escape(said)):
        detect(head)


def test_formats_are_told_by_their_bytes():
    assert detect(b"PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01") == "custom"
    assert detect(b"--\n-- PostgreSQL database dump\n--\n") == "plain"
    assert (
        detect(b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n")
        == "mariadb"
    )
    assert detect(b"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n") == "mariadb"
    assert detect(b"SQLite format 3\x00" + bytes(84)) == "sqlite"
    assert detect(bytes(257) + b"ustar\x0000" + bytes(250)) == "tar"
    assert not crypto.is_encrypted(b"PGDMP")
