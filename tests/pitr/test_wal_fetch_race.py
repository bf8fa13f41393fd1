"""The newest partial WAL file can be stored again, longer, while recovery
fetches it: its new bytes land before the row that describes them commits.
The fetch then reads the new version instead of calling the file damaged."""

import os
import threading

import pytest
from django.db import transaction

from catalog.engine.errors import CorruptionError
from pitr import restores, wal
from pitr.models import ContinuousProtection, WalSegment
from tests.factories import local_destination, pg_source

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "000000010000000000000042.partial"


class BytesDump:
    def __init__(self, data):
        self.data, self.raw_bytes = data, 0

    def __iter__(self):
        self.raw_bytes = len(self.data)
        yield self.data

    def cancel(self):
        pass


@pytest.fixture
def protection(pg_database, tmp_path):
    protection = ContinuousProtection.objects.create(source=pg_source(pg_database), mode="archive", enabled=True)
    protection.destinations.set([local_destination(tmp_path / "wal")])
    return protection


def test_a_partial_stored_again_while_it_is_fetched_is_fetched_in_its_new_version(protection, tmp_path):
    wal.ship_wal_file(protection, NAME, BytesDump(os.urandom(8192)))
    longer = os.urandom(16384)
    stored, finish = threading.Event(), threading.Event()

    def store_again_slowly():
        with transaction.atomic():
            wal.ship_wal_file(protection, NAME, BytesDump(longer))
            stored.set()  # the new bytes are in place; their row commits only when finish is set
            finish.wait(10)

    receiver = threading.Thread(target=store_again_slowly)
    receiver.start()
    assert stored.wait(10)
    threading.Timer(0.5, finish.set).start()
    try:
        fetched = restores.fetch_wal_file(protection.source, NAME[: -len(".partial")], str(tmp_path / "fetched"))
    finally:
        finish.set()
        receiver.join()

    assert fetched
    assert (tmp_path / "fetched").read_bytes() == longer


def test_a_partial_whose_bytes_differ_from_an_unchanged_row_is_damaged(protection, tmp_path, settings):
    segment = wal.ship_wal_file(protection, NAME, BytesDump(os.urandom(8192)))
    WalSegment.objects.filter(pk=segment.pk).update(sha256="0" * 64)  # as if the stored bytes had changed

    with pytest.raises(CorruptionError, match="SHA-256 mismatch"):
        restores.fetch_wal_file(protection.source, NAME[: -len(".partial")], str(tmp_path / "fetched"))

    assert not (tmp_path / "fetched").exists()
