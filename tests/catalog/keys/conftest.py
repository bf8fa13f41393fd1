import os

import pytest

from catalog import backup_runs, keyring
from catalog.models import Backup
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness.sample_db import create_tricky_database

SOURCE_PASSWORD = "s3cret-source-password"


@pytest.fixture(autouse=True)
def key_dir(settings, tmp_path):
    """A key directory of the test's own: keys are created and destroyed here."""
    settings.KEY_DIR = tmp_path / "keys"
    return settings.KEY_DIR


@pytest.fixture
def kek(settings):
    """The database store: master keys sealed in the metadata database under a
    key-encryption key of the test's own (STRONGROOM_KEK)."""
    settings.KEY_ENCRYPTION_KEY = os.urandom(32)
    yield settings.KEY_ENCRYPTION_KEY
    keyring.forget_opened_keys()


def on_host(settings, key_dir):
    """Acts as another host from here on: a key directory of its own (empty,
    or not there at all) and no key opened yet in its process."""
    settings.KEY_DIR = key_dir
    keyring.forget_opened_keys()
    keyring._read_key.cache_clear()


@pytest.fixture
def source_db(pg_database):
    create_tricky_database(pg_database, big_rows=500)
    return pg_database


@pytest.fixture
def plan(source_db, tmp_path, s3_bucket):
    source = pg_source(source_db, password=source_db.get("password") or None)
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    return make_plan(source, destinations, encrypt=True, verify_new_backups=False, retention_mode="last", keep_last=20)


def take_backup(plan, label=""):
    backup = backup_runs.start_backup("test", plan, label=label)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup
