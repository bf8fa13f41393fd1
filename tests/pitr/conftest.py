import pytest

from tests.pitr.wal_helpers import wal_cluster


@pytest.fixture
def cluster(settings, tmp_path):
    """A throwaway cluster with 1 MB WAL segments, and a spool of the test's own."""
    settings.WAL_SPOOL_DIR = tmp_path / "spool"
    cluster = wal_cluster()
    yield cluster
    cluster.stop()
