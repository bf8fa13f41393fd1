"""Everything Strongroom writes is the service user's alone (files 0600,
folders 0700) whatever the umask it was started with, and another local user
who tries to read it is refused; start-up warns about a data directory,
metadata database or key that others can read.

The tests run as root, which reads anything: each reads as `nobody` (setpriv)
files kept under a folder that anyone may pass through, so that only
Strongroom's own modes stand in the way. A file of the same folder left open
(0644) is read by `nobody`, which shows the reader would notice a miss.
"""

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backupsite.envconfig import secret_key
from catalog import backup_runs, exports, holds, keyring
from catalog.engine import wal as walfiles
from catalog.models import Backup, Copy
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database

ROOT = Path(__file__).resolve().parents[2]
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read_as_nobody(path):
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_nobody_is_refused(path):
    result = read_as_nobody(path)
    assert result.returncode != 0, f"{path} was read by nobody"
    assert "Permission denied" in result.stderr, result.stderr


@pytest.fixture
def loose_umask():
    """The umask most shells start with: new files 0644, new folders 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def open_folder():
    """A folder anyone may pass through and list (0755), unlike pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="strongroom-modes-"))
    path.chmod(0o755)
    control = path / "left-open.txt"
    control.write_text("anyone may read this\n")
    control.chmod(0o644)
    assert read_as_nobody(control).stdout == "anyone may read this\n"  # the reader would see a miss
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def folders_from(top, path):
    """`top` and every folder below it down to `path`'s own."""
    path, top = Path(path), Path(top)
    found = [top]
    for part in path.parent.relative_to(top).parts:
        found.append(found[-1] / part)
    return found


# --- a backup to a local destination ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_backups_files_and_folders_are_private_and_nobody_else_reads_them(
    pg_database, open_folder, loose_umask, settings
):
    settings.KEY_DIR = open_folder / "data" / "keys"
    create_tricky_database(pg_database, big_rows=50)
    vault = open_folder / "vault"
    plan = make_plan(pg_source(pg_database), [local_destination(vault)], encrypt=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    backup.pinned, backup.hold_reason = True, "kept for the audit"
    backup.save(update_fields=["pinned", "hold_reason"])
    assert holds.store_hold_state("test", backup.pk) == []
    copy = backup.copies.get(status=Copy.DURABLE)

    stored = [p for p in vault.rglob("*") if p.is_file()]
    names = {p.name for p in stored}
    assert Path(copy.key).name in names and Path(copy.manifest_key).name in names
    assert any(name.endswith(".globals") for name in names) and any(name.endswith(".hold") for name in names)
    assert {str(p.relative_to(vault)): oct(mode(p)) for p in stored} == {
        str(p.relative_to(vault)): "0o600" for p in stored
    }
    folders = {folder for p in stored for folder in folders_from(vault, p)}
    assert {str(f): oct(mode(f)) for f in folders} == {str(f): "0o700" for f in folders}

    # The backup is not encrypted: whoever reads it has the database. Nobody else may.
    for path in stored:
        assert_nobody_is_refused(path)
    # Not even with the folders opened to them: the files' own modes refuse.
    for folder in folders:
        folder.chmod(0o755)
    for path in stored:
        assert_nobody_is_refused(path)


def test_local_storage_keeps_its_files_private_whatever_the_umask(open_folder, loose_umask):
    from catalog.engine.storage.local import LocalStorage

    storage = LocalStorage(open_folder / "dest")
    storage.probe()  # makes the directory
    storage.put_bytes("a/b/c/object.bin", b"secret rows")
    assert mode(open_folder / "dest") == 0o700
    assert [mode(open_folder / "dest" / sub) for sub in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(open_folder / "dest" / "a/b/c/object.bin") == 0o600


# --- the metadata database, the data directory, keys ---------------------------------------------------


def quick_start_env(data_dir, **values):
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.update(STRONGROOM_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="backupsite.settings", **values)
    return env


def loose_umask_child():
    os.umask(0o022)


SQLITE_MODES = """
import json, os, subprocess, django
django.setup()
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE django_session_copy (session_key text)")
    cursor.execute("INSERT INTO django_session_copy VALUES ('a session key')")
name = settings.DATABASES["default"]["NAME"]
modes = {suffix or "db": oct(os.stat(name + suffix).st_mode & 0o777) for suffix in ("", "-wal", "-shm")}
nobody = {suffix or "db": subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat",
                                           name + suffix], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True, errors="replace").stderr
          for suffix in ("", "-wal", "-shm")}
with open(os.path.join(settings.DATA_DIR, "plain.txt"), "w") as handle:  # any file, made with the process umask
    handle.write("x")
print(json.dumps({"modes": modes, "nobody": nobody, "umask": oct(os.umask(0o077)),
                  "plain": oct(os.stat(os.path.join(settings.DATA_DIR, "plain.txt")).st_mode & 0o777)}))
"""


def test_the_quick_start_data_directory_and_metadata_database_are_private(open_folder):
    """A fresh start with the SQLite metadata database, launched with umask
    022: the data directory is 0700, the database and its -wal and -shm are
    0600 while in use, and the process umask is 077."""
    data_dir = open_folder / "data"
    result = subprocess.run(
        [sys.executable, "-c", SQLITE_MODES],
        cwd=ROOT,
        env=quick_start_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=loose_umask_child,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)

    assert found["modes"] == {"db": "0o600", "-wal": "0o600", "-shm": "0o600"}
    for name, refusal in found["nobody"].items():
        assert "Permission denied" in refusal, name
    assert found["umask"] == "0o77" and found["plain"] == "0o600"
    assert mode(data_dir) == 0o700 and mode(data_dir / "secret_key") == 0o600
    data_dir.chmod(0o755)  # even when the folder is opened later, the files refuse
    assert_nobody_is_refused(data_dir / "strongroom.sqlite3")
    assert_nobody_is_refused(data_dir / "secret_key")


def test_sqlite_gives_its_wal_files_the_private_mode_of_the_database(open_folder, loose_umask):
    import sqlite3

    from backupsite.envconfig import create_private_database_file

    path = open_folder / "meta" / "strongroom.sqlite3"
    create_private_database_file(path)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.commit()
        assert [mode(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")] == [0o600] * 3
    finally:
        connection.close()
    assert mode(path.parent) == 0o700


def test_the_secret_key_file_and_its_folder_are_private(open_folder, loose_umask, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    secret_key(open_folder / "new" / "data")
    assert mode(open_folder / "new") == 0o700 and mode(open_folder / "new" / "data") == 0o700
    assert mode(open_folder / "new" / "data" / "secret_key") == 0o600


@pytest.mark.django_db
def test_a_new_master_key_and_its_folders_are_private(open_folder, loose_umask, settings):
    settings.KEY_DIR = open_folder / "data" / "keys"
    key = keyring.create_master_key()
    path = keyring.key_path(key.key_id)
    assert (mode(open_folder / "data"), mode(settings.KEY_DIR), mode(path)) == (0o700, 0o700, 0o600)
    assert_nobody_is_refused(path)
    settings.KEY_DIR.chmod(0o755)
    (open_folder / "data").chmod(0o755)
    assert_nobody_is_refused(path)


# --- spools and scratch files ---------------------------------------------------------------------


def test_spool_and_scratch_folders_are_private(open_folder, loose_umask, settings):
    settings.DATA_DIR = open_folder / "data"
    assert mode(exports.spool_dir()) == 0o700 and mode(settings.DATA_DIR) == 0o700

    # The WAL receiver's spool and its log, even when pg_receivewal cannot start.
    spool = open_folder / "wal-spool" / "7"
    with pytest.raises(Exception, match="not found"):
        walfiles.start_receivewal(
            "/nonexistent/pg_receivewal",
            str(spool),
            "slot",
            {"host": "127.0.0.1"},
            str(open_folder / "wal-spool" / "7.log"),
        )
    assert (mode(open_folder / "wal-spool"), mode(spool), mode(open_folder / "wal-spool" / "7.log")) == (
        0o700,
        0o700,
        0o600,
    )

    from catalog.engine.files import make_private_dirs

    made = make_private_dirs(open_folder / "restore-tmp" / "restore-12")
    assert [mode(made), mode(Path(made).parent)] == [0o700, 0o700]


# --- the start-up warning --------------------------------------------------------------------------


def opened_up(data_dir):
    """A data directory made before this release, with the umask most shells have."""
    data_dir.mkdir()
    (data_dir / "keys").mkdir()
    for path in (data_dir, data_dir / "keys"):
        path.chmod(0o755)
    key = data_dir / "keys" / "mk-20250101-000000-abcd.key"
    key.write_text("not read by the check\n")
    (data_dir / "strongroom.sqlite3").write_bytes(b"")
    (data_dir / "secret_key").write_text("an old secret key\n")
    for path in (key, data_dir / "strongroom.sqlite3", data_dir / "secret_key"):
        path.chmod(0o644)
    return key


def manage_check(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_start_up_warns_about_what_other_users_can_read(open_folder):
    data_dir = open_folder / "data"
    key = opened_up(data_dir)
    env = quick_start_env(data_dir)

    for result in (manage_check(env), manage_check(env, "--deploy")):
        out = result.stdout + result.stderr
        assert f"(catalog.W001) Other users of this machine can read the data directory {data_dir}" in out, out
        assert (
            f"(catalog.W002) Other users of this machine can read the metadata database {data_dir}/strongroom.sqlite3"
            in out
        )
        assert "session keys (whoever reads one is signed in)" in out
        assert f"(catalog.W003) Other users of this machine can read the master key file {key}" in out
        assert f"(catalog.W003) Other users of this machine can read the key directory {data_dir}/keys" in out
        assert f"(catalog.W004) Other users of this machine can read the secret key file {data_dir}/secret_key" in out
        assert f"HINT: Make it the service user's alone: chmod 600 {key}" in out
        assert f"HINT: Make it the service user's alone: chmod go-rw {data_dir}" in out

    # The web server loads the WSGI module and runs no checks: the log says the same.
    loaded = subprocess.run(
        [sys.executable, "-c", "import backupsite.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"Other users of this machine can read the master key file {key}" in loaded.stderr

    # Made private as the hints say, the warnings are gone; a folder others may
    # only pass through (to reach a point-in-time restore) is not a warning.
    for path in (data_dir, data_dir / "keys"):
        path.chmod(0o711)
    for path in (key, data_dir / "strongroom.sqlite3", data_dir / "secret_key"):
        path.chmod(0o600)
    quiet = manage_check(env)
    assert quiet.returncode == 0 and "catalog.W" not in quiet.stdout + quiet.stderr, quiet.stdout + quiet.stderr
    assert "System check identified no issues" in quiet.stdout
