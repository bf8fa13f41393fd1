"""README "Disaster recovery without Strongroom": a directory-format
backup's stored object comes back with the decrypt command, tar and
pg_restore -j alone, by the commands exactly as written there."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import backup_runs, keyring
from catalog.engine import manifest
from catalog.models import Backup
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database, table_fingerprints

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]


def readme_recipe():
    """The shell block after "A directory-format backup comes back as the tar"."""
    text = (REPO / "README.md").read_text()
    return re.search(r"A directory-format backup comes back as the tar.*?```sh\n(.*?)```", text, re.S).group(1)


def test_the_readmes_commands_restore_a_directory_backup_without_strongroom(pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=2_000)
    at_backup = table_fingerprints(pg_database)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path / "disk")], format="directory", dump_jobs=2)
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error

    # What is left after the loss: the stored object and its manifest, under the README's names, and the key file.
    hand = tmp_path / "by-hand"
    hand.mkdir()
    disk = tmp_path / "disk"
    shutil.copy(disk / backup.object_key, hand / "backup.dir.tar.zst.enc")
    shutil.copy(
        disk / manifest.manifest_key_for(backup.object_key), hand / manifest.manifest_key_for("backup.dir.tar.zst.enc")
    )
    recipe = (
        readme_recipe()
        .replace("python -m", f"{sys.executable} -m")
        .replace("data/keys/mk-….key", str(keyring.key_path(backup.key_id)))
    )
    target = pg.create_database(f"sr_by_hand_{backup.pk}")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PGHOST": target["host"],
        "PGPORT": str(target["port"]),
        "PGUSER": target["user"],
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", recipe.replace("newdb", target["dbname"])],
            cwd=hand,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert (hand / "dump" / "toc.dat").is_file()
        assert table_fingerprints(target) == at_backup
    finally:
        pg.drop_database(target["dbname"])
