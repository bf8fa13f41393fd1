import pytest

from tests.harness.sample_db import create_tricky_database


@pytest.fixture
def source_db(pg_database):
    """The tricky sample database (partitions, an enum, a mixed-case schema, a
    trigger) with 2,000 ledger rows; a module with a schema of its own
    defines its own source_db."""
    create_tricky_database(pg_database, big_rows=2000)
    return pg_database
